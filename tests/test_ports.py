"""The tests' own port picker: ports that no outgoing connection can take before the server binds them."""

from __future__ import annotations

import socket

import pytest

from tests.ports import LOWEST, accepts, ephemeral_floor, free_port


@pytest.mark.skipif(ephemeral_floor() - LOWEST < 1000, reason="no room below this kernel's ephemeral port range")
def test_free_port_is_below_the_ephemeral_range_and_bindable() -> None:
    ports = {free_port() for _ in range(20)}
    assert all(LOWEST <= port < ephemeral_floor() for port in ports), ports
    for port in ports:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))


def test_accepts_only_while_something_listens() -> None:
    with socket.create_server(("127.0.0.1", free_port())) as server:
        port = server.getsockname()[1]
        assert accepts(port)
    assert not accepts(port)
