"""A component as real ones are written with keboola.component: reads the input table it is
given, writes a typed table with a primary key (incremental: upserts), a table without a
key that is replaced, a headless table that is appended, a file with tags, and its state.

Each run N (N = state["runs"] + 1) writes orders for ids N and N+1 with amount = input
amount * N, so the second run upserts id 2 and adds id 3."""
import csv
import json
import os
from collections import OrderedDict

from keboola.component.base import ComponentBase
from keboola.component.dao import BaseType, ColumnDefinition, TableMetadata
from keboola.component.exceptions import UserException


class Component(ComponentBase):
    def run(self):
        state = self.get_state_file() or {}
        run = int(state.get("runs", 0)) + 1
        inputs = {t.id: t for t in self.get_input_tables_definitions()}
        if "in.c-src.orders" not in inputs:
            raise UserException(f"in.c-src.orders is not among the inputs: {sorted(inputs)}")
        source = self.get_input_table_definition_by_name("orders.csv")
        if source.primary_key != ["id"] or source.column_names != ["id", "amount"]:
            raise UserException(f"input manifest: key {source.primary_key}, columns {source.column_names}")
        with open(source.full_path) as f:
            amounts = {r["id"]: int(r["amount"]) for r in csv.DictReader(f)}

        schema = OrderedDict(
            id=ColumnDefinition(data_types=BaseType.integer(), primary_key=True, nullable=False),
            amount=ColumnDefinition(data_types=BaseType.numeric(length="12,2"), description="in EUR"),
            run=ColumnDefinition(),
        )
        orders = self.create_out_table_definition(
            "orders.csv", schema=schema, incremental=True, has_header=True,
            description="orders, upserted by id",
        )
        with open(orders.full_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(list(schema))
            for i in (run, run + 1):
                w.writerow([i, amounts[str(i)] * run, run])
        self.write_manifest(orders)

        plain = self.create_out_table_definition("plain.csv")
        with open(plain.full_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["k", "v"])
            w.writerow([f"run{run}", "x,\"quoted\""])
        self.write_manifest(plain)

        log = self.create_out_table_definition("log.csv", schema=["run", "env"], incremental=True)
        with open(log.full_path, "w", newline="") as f:
            csv.writer(f).writerow([run, os.environ.get("KBC_STACKID", "-")])
        self.write_manifest(log)

        # Types the older way (TableMetadata), as many components still write them: the
        # library puts booleans (KBC.datatype.nullable: false) into the metadata.
        metadata = TableMetadata()
        metadata.add_column_data_types({"code": "INTEGER"})
        metadata.add_column_metadata("code", "source.width", 4)
        metadata.add_table_metadata("source.rows", 1)
        typed = self.create_out_table_definition("typed.csv", table_metadata=metadata)
        with open(typed.full_path, "w", newline="") as f:
            csv.writer(f).writerow([run])  # headless: the manifest names the columns
        self.write_manifest(typed)

        report = self.create_out_file_definition("report.txt", tags=["report", f"run-{run}"])
        with open(report.full_path, "w") as f:
            f.write(json.dumps({"run": run, "orders": len(amounts)}))
        self.write_manifest(report)

        self.write_state_file({"runs": run})
        print(f"run {run} done")
