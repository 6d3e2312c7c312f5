"""The metrics endpoint of a real `pynfsd serve --metrics`: known COMPOUNDs, then the scraped
series must count exactly them, and `pynfsd status` must show the same headline numbers."""

from __future__ import annotations

from pathlib import Path

from pynfsd import admin
from pynfsd.client.nfs4 import Nfs4Client, op, unchecked
from pynfsd.gen import nfs4 as N
from tests.metrics_support import Samples, fetch, metrics_port, scrape, total, value
from tests.serverproc import ServerProcess, assert_log_clean, lookup_path

OK = "NFS4_OK"
DATA = b"m" * 5000


async def workload(c: Nfs4Client, export: Path) -> None:
    """5 GETATTRs, a failed LOOKUP, a client id, an OPEN (created), a WRITE, a READ, a LOCK."""
    for _ in range(5):
        await c.check([op.putrootfh(), op.getattr(N.FATTR4_SIZE)])
    res = await c.compound([op.putrootfh(), *lookup_path(export), op.lookup(b"missing")])
    assert res.status == N.NFS4ERR_NOENT
    verf = b"metrics!"
    (sc,) = await c.check([op.setclientid(verf, b"metrics-client")])
    await c.check([op.setclientid_confirm(sc.clientid, sc.setclientid_confirm)])
    opened = await c.check([op.putrootfh(), *lookup_path(export),
                            op.open(0, sc.clientid, b"o", b"f", create=unchecked(0o644)),
                            op.getfh()])
    resok, fh = opened[-2], opened[-1].object
    sid = resok.stateid
    if resok.rflags & N.OPEN4_RESULT_CONFIRM:
        _, conf = await c.check([op.putfh(fh), op.open_confirm(sid, 1)])
        sid = conf.open_stateid
    await c.check([op.putfh(fh), op.write(sid, 0, DATA)])
    await c.check([op.putfh(fh), op.read(sid, 0, 1 << 16)])
    locker = N.locker4(True, N.open_to_lock_owner4(2, sid, 0, N.lock_owner4(sc.clientid, b"l")))
    await c.check([op.putfh(fh), op.lock(N.WRITE_LT, 0, 10, locker)])


def server(tmp_path: Path, *options: str, name: str = "state") -> ServerProcess:
    """A server exporting `tmp_path/exp` (created) with `options`."""
    export = tmp_path / "exp"
    export.mkdir(exist_ok=True)
    return ServerProcess([f"{export} *(rw,no_root_squash,insecure)"], tmp_path / name,
                         extra_args=options, log_level="INFO")


def ops(samples: Samples, op_name: str, status: str = OK) -> float:
    return value(samples, "pynfsd_operations_total", op=op_name, status=status)


async def test_scraped_series_count_the_workload(tmp_path: Path) -> None:
    with server(tmp_path, "--metrics", "127.0.0.1:0") as srv:
        port = metrics_port(srv)
        before = scrape(port)
        c = await srv.connect()
        await workload(c, tmp_path / "exp")
        await c.close()
        after = scrape(port)
        status = admin.call(str(srv.state_dir), {"cmd": "status"})
        again = scrape(port)
    assert_log_clean(srv.log_text())

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("pynfsd_operations_total", op="GETATTR", status=OK) == 5
    assert delta("pynfsd_operations_total", op="LOOKUP", status="NFS4ERR_NOENT") == 1
    for name in ("OPEN", "WRITE", "READ", "LOCK", "SETCLIENTID", "SETCLIENTID_CONFIRM"):
        assert delta("pynfsd_operations_total", op=name, status=OK) == 1, name
    for key, count in after["pynfsd_operations_total"].items():  # histogram count == counter
        assert after["pynfsd_operation_duration_seconds_count"][key] == count
        inf = tuple(sorted((*key, ("le", "+Inf"))))
        assert after["pynfsd_operation_duration_seconds_bucket"][inf] == count
    assert delta("pynfsd_write_bytes_total") == len(DATA)
    assert delta("pynfsd_read_bytes_total") == len(DATA)
    assert delta("pynfsd_rpc_received_bytes_total") > len(DATA)
    assert delta("pynfsd_rpc_sent_bytes_total") > len(DATA)
    compounds = 5 + 1 + 2 + 1 + 3 + (1 if ops(after, "OPEN_CONFIRM") else 0)
    assert delta("pynfsd_rpc_calls_total", flavor="sys") == compounds
    assert value(after, "pynfsd_clients", state="active") == 1
    assert value(after, "pynfsd_opens") == 1 and value(after, "pynfsd_locks") == 1
    assert value(after, "pynfsd_connections_accepted_total") >= 1
    assert value(after, "pynfsd_drc_stored_total") >= 5  # the non-idempotent COMPOUNDs
    assert value(after, "process_resident_memory_bytes") > 0
    assert value(after, "process_cpu_seconds_total") > 0
    head = status["metrics"]  # `pynfsd status` reads the same snapshot
    assert head["ops"] == total(again, "pynfsd_operations_total")
    assert head["rpc_calls"] == {"sys": value(again, "pynfsd_rpc_calls_total", flavor="sys")}
    assert head["write_bytes"] == len(DATA) and head["read_bytes"] == len(DATA)
    assert head["clients_by_state"]["active"] == 1 and (head["opens"], head["locks"]) == (1, 1)


async def test_other_paths_and_methods(tmp_path: Path) -> None:
    with server(tmp_path, "--metrics", "127.0.0.1:0") as srv:
        port = metrics_port(srv)
        try:
            fetch(port, "/")
        except Exception as e:  # urllib raises HTTPError for a 404
            assert getattr(e, "code", None) == 404
        else:
            raise AssertionError("/ answered")
        assert b"pynfsd_operations_total" in fetch(port)
        await srv.assert_healthy()


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    with server(tmp_path) as srv:
        srv.healthy()
        assert "metrics on" not in srv.log_text()
        assert "operations:" in admin.format_status(
            admin.call(str(srv.state_dir), {"cmd": "status"}))


def test_an_unusable_metrics_address_stops_the_start(tmp_path: Path) -> None:
    with server(tmp_path, "--metrics", "127.0.0.1:0", name="a") as first:
        taken = metrics_port(first)
        second = server(tmp_path, "--metrics", f"127.0.0.1:{taken}", name="b")
        try:
            second.start()
        except Exception:
            pass
        second.stop()
        assert second.returncode == 3  # unavailable: the address cannot be used
        assert f"pynfsd: cannot serve metrics on 127.0.0.1 port {taken}" in second.log_text()
