"""Grafana dashboards and alert rules as code, over the InfluxDB measurements of orelane.contract.

`orelane dashboards build` (dashboards.build) writes the dashboard JSON and
provisioning files; `orelane dashboards push` (dashboards.push) uploads them
to a running Grafana.
"""
