"""The lab desk: where lab staff receive the robot's sample cups and record results, and inspectors check them.

`orelane lab serve` runs server.main; desk holds the operations on the
registry, users the sign-in and access log, code128 the barcode labels, and
calibration turns a targeted sample's result into a labelled spectral dataset.
"""

from sampling_robot.labdesk.calibration import export_calibration_set
from sampling_robot.labdesk.server import main, make_app, serve
from sampling_robot.labdesk.users import ROLES, UserStore, add_user

__all__ = ["ROLES", "UserStore", "add_user", "export_calibration_set", "main", "make_app", "serve"]
