"""Entry point of the conformance image: runs the component named by the last part of
KBC_COMPONENTID (`conform.orders` runs orders.py), the way one image per component would.
Errors leave as keboola.component's own template does: UserException exits 1, anything
else 2."""
import importlib
import logging
import os
import sys

from keboola.component.exceptions import UserException

if __name__ == "__main__":
    name = os.environ.get("KBC_COMPONENTID", "").rsplit(".", 1)[-1]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        module = importlib.import_module(name)
        module.Component().execute_action()
    except UserException as exc:
        logging.exception(exc)
        sys.exit(1)
    except Exception as exc:
        logging.exception(exc)
        sys.exit(2)
