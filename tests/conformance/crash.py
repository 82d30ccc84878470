"""Fails with an exception nobody catches in the component: an application error (exit 2)."""
from keboola.component.base import ComponentBase


class Component(ComponentBase):
    def run(self):
        return {}["missing"]
