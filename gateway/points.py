"""``pulse-gateway points``: the BACnet points list as CSV, for BMS integrators.

The object map itself lives in ``gateway.bacnet.points`` (the server builds its objects from
it); this adds the two objects that are not meter points, the Device and the B/IP network
port, and prints every object in the order an integrator maps them.
"""

from __future__ import annotations

import csv
import io

from gateway.bacnet.points import (
    NETWORK_PORT_INSTANCE,
    NETWORK_PORT_NAME,
    all_points,
    reset_all_point,
)
from gateway.config import Config

HEADER = ("type", "instance", "name", "units", "writable", "description")


def points_rows(config: Config) -> list[tuple[str, int, str, str, str, str]]:
    """Every BACnet object of ``config``: device, reset_all, the channels', network port."""
    rows = []
    if config.bacnet is not None:
        rows.append(
            (
                "device",
                config.bacnet.device_instance,
                config.bacnet.device_name,
                "",
                "no",
                "the gateway",
            )
        )
    reset_all = reset_all_point()
    channel_points = [p for p in all_points(config.channels) if p != reset_all]
    for p in [reset_all, *channel_points]:
        rows.append(
            (
                p.object_type,
                p.instance,
                p.name,
                p.units,
                "yes" if p.writable else "no",
                p.description,
            )
        )
    rows.append(
        (
            "network-port",
            NETWORK_PORT_INSTANCE,
            NETWORK_PORT_NAME,
            "",
            "no",
            "the BACnet/IP port the gateway answers on",
        )
    )
    return rows


def points_csv(config: Config) -> str:
    """The points list as CSV with the header type,instance,name,units,writable,description."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(points_rows(config))
    return out.getvalue()
