"""The wire contract: topics, payload codecs, Modbus register maps and measurement names.

Every byte that crosses a process boundary is defined here and nowhere else;
docs/interfaces.md is the prose form of this package.
"""

CONTRACT_VERSION = 1


class ContractError(ValueError):
    """A payload or register block that does not follow the contract; the message names what and where."""
