"""Free ports for parallel stacks: below the ephemeral range, and never the same one to two callers at once."""

from __future__ import annotations

import socket

from stack import ports


def test_a_free_port_is_below_the_ephemeral_range_and_bindable():
    port = ports.free_port()
    assert ports.LOWEST <= port < ports.ephemeral_low()
    with socket.socket() as sock:
        sock.bind((ports.HOST, port))


def test_a_port_handed_out_is_not_handed_out_again_while_reserved(tmp_path, monkeypatch):
    monkeypatch.setattr(ports, "RESERVATIONS", tmp_path)
    monkeypatch.setattr(ports, "LOWEST", ports.ephemeral_low() - 40)  # a small range: repeats would show
    given = [ports.free_port() for _ in range(30)]
    assert len(set(given)) == len(given)
    assert sorted(int(p.name) for p in tmp_path.iterdir()) == sorted(given)


def test_an_old_reservation_lapses(tmp_path, monkeypatch):
    monkeypatch.setattr(ports, "RESERVATIONS", tmp_path)
    monkeypatch.setattr(ports, "RESERVED_FOR", -1.0)
    assert ports._reserve(20001)
    assert ports._reserve(20001)  # the first note is already older than RESERVED_FOR
