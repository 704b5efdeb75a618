"""Shared simulated data for the spectral tests; session-scoped so the whole folder stays fast."""

from __future__ import annotations

import numpy as np
import pytest

from spectral import model, synth


@pytest.fixture(scope="session")
def instrument() -> synth.Instrument:
    return synth.Instrument(synth.wavelength_grid())


@pytest.fixture(scope="session")
def lane_model(instrument) -> model.LaneModel:
    return model.train_synthetic(instrument, np.random.default_rng(1))


@pytest.fixture(scope="session")
def references(instrument) -> tuple[np.ndarray, np.ndarray]:
    return instrument.dark_reference(), instrument.white_reference()
