"""The automatic sampling robot: its PLC simulator, the Modbus driver, the sample registry and reconciliation.

`status` and `reconcile` are the pure core (register words in, decisions out);
`driver`, `plc_sim` and `registry` are the shell around sockets, threads and SQLite.
"""
