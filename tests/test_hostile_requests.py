"""Remote enrollment as an attacker would try it (issue 14): oversized images, non-ASCII digits in an
unsigned v5 request, log forging and floods. A REAL mosquitto, the agent's MqttClient and intake, the real
models on real photos."""

from __future__ import annotations

import logging
import struct
import time
import zlib

import pytest
import test_remote_enrollment as remote
from conftest import SHARED
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from test_remote_enrollment import TRAIN, agent_config, req

from agent.sync import enrollment_protocol as proto

# the real-broker fixtures of the remote enrollment tests (mosquitto with the deploy ACL, agents, operators)
broker, keyfile, agents, operators = remote.broker, remote.keyfile, remote.agents, remote.operators

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not found")


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG file whose header claims width x height (a decompression bomb as the probe sees it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """A real JPEG with its frame header (SOF0/1/2) patched to claim width x height."""
    i = 2
    while i < len(jpeg):
        marker, length = jpeg[i + 1], struct.unpack(">H", jpeg[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            return jpeg[:i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9:]
        i += 2 + length
    raise AssertionError("no SOF marker")


def test_oversized_images_are_rejected_and_the_good_photo_is_trained(tmp_path, broker, keyfile, agents,
                                                                     operators, caplog):
    agent = agents(agent_config(tmp_path, broker, keyfile)).start()
    op = operators(broker)
    good = (TRAIN / "biden" / "biden.jpg").read_bytes()
    bombs = [("huge.png", png_claiming(30000, 30000)), ("huge.jpg", jpeg_claiming(good, 65000, 65000)),
             ("big.png", png_claiming(8000, 6000))]  # over max_pixels, under Pillow's own limit
    request = req(person="biden", images=[("biden.jpg", good), *bombs])
    op.send(request)
    result = op.result(request["request_id"])
    assert result["status"] == "partial", result
    by_name = {i["name"]: i for i in result["images"]}
    assert by_name["biden.jpg"]["status"] == "accepted"
    for name, _ in bombs:
        assert by_name[name]["status"] == "rejected" and by_name[name]["reason"] == "unreadable", by_name[name]
        assert "max_pixels" in by_name[name]["message"] and "40000000" in by_name[name]["message"]
    assert result["retrain"], "the accepted photo schedules a retrain"
    assert agent.updated.wait(60), "no retrain after a partly accepted request"
    assert agent.updates[0][1]["counts"] == {"biden": 1}
    listed = req("list")
    op.send(listed)
    answer = op.result(listed["request_id"])
    assert answer["retrain_pending"] is False and answer["model"]["counts"] == {"biden": 1}
    # a bomb alone: a clean rejection, never an internal error
    alone = req(person="bomb", images=[bombs[0]])
    op.send(alone)
    r = op.result(alone["request_id"])
    assert (r["status"], r["error"]["code"]) == ("rejected", "no_usable_image")
    assert not [rec for rec in caplog.records if rec.exc_info], "a traceback was logged"


def test_unsigned_v5_request_with_a_superscript_version_is_rejected_without_a_traceback(
        tmp_path, broker, keyfile, agents, operators, caplog):
    agents(agent_config(tmp_path, broker, keyfile)).start()
    op = operators(broker)
    intruder = operators(broker, "intruder", topics=())
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("command", "add"), ("schema_version", "²"), ("request_id", "sup-1")]
    intruder.send(b"image bytes", properties=props)
    found = op.wait(lambda m: m[1].get("type") == "enroll_result" and m[1]["status"] != "ok", timeout=30)
    assert found, "no answer"
    result = found[0][1]
    assert result["status"] == "rejected", result
    assert result["error"]["code"] in ("unsupported_version", "malformed")
    assert not [rec for rec in caplog.records if rec.exc_info], "a traceback was logged"
    assert "internal_error" not in caplog.text


def test_outside_values_are_logged_escaped_cut_and_rate_limited(tmp_path, broker, keyfile, agents, operators,
                                                                caplog):
    caplog.set_level(logging.INFO)
    agents(agent_config(tmp_path, broker, keyfile)).start()
    op = operators(broker)
    intruder = operators(broker, "intruder", topics=())
    forged = "list\n2026-01-01 00:00:00 CRITICAL agent: root password is hunter2\x1b[2J\x00" + "A" * 5000
    ids = []
    for n in range(60):
        unsigned = req("list")
        del unsigned["signature"]
        unsigned["command"] = forged
        unsigned["request_id"] = f"flood-{n}"
        ids.append(unsigned["request_id"])
        intruder.send(unsigned)
    for rid in ids:  # every request is still answered
        assert op.result(rid)["error"]["code"] == "unsigned"
    lines = [rec.getMessage() for rec in caplog.records if rec.name.startswith("agent.")]
    for line in lines:
        assert "\n" not in line and "\x1b" not in line and "\x00" not in line, repr(line[:200])
        assert len(line) < 1500, len(line)
    rejected = [line for line in lines if "rejected request" in line]
    assert rejected and "\\n2026-01-01 00:00:00 CRITICAL" in rejected[0]  # visible, escaped, on one line
    assert len(rejected) <= 20, f"{len(rejected)} rejection lines for 60 requests: not rate-limited"


def test_rate_limited_log_says_how_many_it_left_out(caplog):
    from agent.logsafe import RateLimitedLog, escape

    caplog.set_level(logging.INFO)
    # a period far longer than the 10 calls take, even on a loaded machine
    limited = RateLimitedLog(logging.getLogger("agent.test"), per_period=3, period=2.0)
    logged = [limited.warning("rejected %s", escape(f"x{i}\n")) for i in range(10)]
    assert logged == [True] * 3 + [False] * 7
    time.sleep(2.05)
    assert limited.warning("again")
    assert "7 similar messages were not logged" in caplog.text
    assert escape("é ok") == "é ok" and escape("a\u202eb") == "a\\u202eb"
    assert escape("x" * 300, 10) == "xxxxxxxxxx...(+290 chars)"
    assert proto.SCHEMA_VERSION == 1
