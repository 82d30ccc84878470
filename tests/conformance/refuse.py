"""Refuses its configuration through the library: a user error (exit 1)."""
from keboola.component.base import ComponentBase
from keboola.component.exceptions import UserException


class Component(ComponentBase):
    def run(self):
        raise UserException(f"parameter 'mode' must be 'ok', not {self.configuration.parameters.get('mode')!r}")
