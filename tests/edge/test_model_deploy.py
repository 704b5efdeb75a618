"""`orelane model deploy` against a running lane: Mosquitto, the lane daemon, its simulators and ingest."""

from __future__ import annotations

import threading

import numpy as np

from edge import deploy
from ingest.store import EmbeddedStore
from orelane import demo
from orelane.config import MqttConfig
from spectral import synth
from spectral.model import LaneModel, train_synthetic


def test_deploy_refuse_and_roll_back_on_a_running_lane_without_dropping_a_spectrum(mosquitto, tmp_path, monkeypatch):
    monkeypatch.delenv("ORELANE_MODEL_KEY", raising=False)
    mqtt_cfg = MqttConfig(host=mosquitto.host, port=mosquitto.port)
    stop = threading.Event()
    steps: list[tuple[str, list[deploy.LaneAnswer]]] = []
    failures: list[BaseException] = []

    def deploy_sequence(handles):
        site, daemon = handles["site"], handles["daemon"]
        lane = site.lanes[0].id
        try:
            first = daemon.core.model
            original = tmp_path / "models" / f"{first.model_id}.npz"
            assert LaneModel.load(original).version == first.version
            grid = synth.Instrument(synth.wavelength_grid())  # the simulated lane's spectrometer
            newer = train_synthetic(grid, np.random.default_rng(123), model_id="lane-v2")
            newer_path = newer.save(tmp_path / "lane-v2.npz")
            wider = train_synthetic(synth.Instrument(synth.wavelength_grid(224, 950.0, 1800.0)),
                                    np.random.default_rng(5), model_id="swir-v1")
            wider_path = wider.save(tmp_path / "swir-v1.npz")
            for path in (newer_path, wider_path, original):  # new model, one the lane cannot use, roll back
                steps.append((path.stem, deploy.deploy(site, path, [lane], wait_s=20.0, client_id="test-deploy",
                                                       progress=lambda line: None)))
                stop.wait(2.0)  # spectra scored with each model
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)
        finally:
            stop.set()

    def started(handles):
        threading.Thread(target=deploy_sequence, args=(handles,), daemon=True).start()

    summary = demo.run_lane(mqtt_cfg, tmp_path, patches=[], duration_s=120.0, stop=stop, on_started=started)
    assert not failures, failures
    (new_name, new), (wide_name, wide), (back_name, back) = steps
    assert [a.state for a in new] == [deploy.RUNNING], new
    assert [a.state for a in wide] == [deploy.REFUSED], wide
    assert "does not fit" in wide[0].detail and "still scoring with lane-v2@" in wide[0].detail
    assert [a.state for a in back] == [deploy.RUNNING], back

    # every spectrum published was scored exactly once, and the outputs name the model that scored them:
    # the first model, then lane-v2, then the first again (the refused one never)
    store = EmbeddedStore(summary.store_path)
    results = sorted((p.fields["seq"], p.tags["model_version"]) for p in store.points("spectrum_result"))
    store.close()
    seqs = [seq for seq, _ in results]
    assert seqs == list(range(summary.spectra_published)), (len(seqs), summary.spectra_published)
    runs = [results[0][1]] + [v for (_, u), (_, v) in zip(results, results[1:]) if u != v]
    assert [r.split("@")[0] for r in runs] == [back_name, "lane-v2", back_name]
    assert not any(v.startswith("swir-v1") for _, v in results)


def test_deploy_names_what_is_wrong_before_publishing_anything(mosquitto, tmp_path, capsys):
    site = tmp_path / "site.toml"
    site.write_text(f"""[site]
id = "s"
[mqtt]
host = "{mosquitto.host}"
port = {mosquitto.port}
[[lane]]
id = "lane-1"
belt_scale = {{ host = "127.0.0.1", port = 1 }}
robot = {{ host = "127.0.0.1", port = 2 }}
""")
    good = train_synthetic(synth.Instrument(synth.wavelength_grid()), np.random.default_rng(1), model_id="m1").save(tmp_path / "m1.npz")
    assert deploy.main([str(good), "--config", str(site), "--lane", "lane-9"]) == 2
    assert "no lane lane-9 in this site (lanes: lane-1)" in capsys.readouterr().err

    broken = tmp_path / "broken.npz"
    broken.write_bytes(good.read_bytes()[:-200])
    assert deploy.main([str(broken), "--config", str(site), "--lane", "lane-1"]) == 1
    assert "broken.npz" in capsys.readouterr().err

    # a lane whose daemon is not running: the deployment is retained, and the command says it got no answer
    assert deploy.main([str(good), "--config", str(site), "--lane", "lane-1", "--wait-s", "1"]) == 1
    out = capsys.readouterr().out
    assert "lane-1: no answer" in out and "retained" in out
