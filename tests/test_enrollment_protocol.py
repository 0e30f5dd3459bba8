"""The remote-enrollment protocol without MQTT: canonical form, signing, keys, freshness, validation."""

from __future__ import annotations

import base64
import json
import logging
import os

import pytest

from agent.sync import enrollment_protocol as p
from agent.topics import Topics, all_results_topic

KEY = bytes(range(32))
KEYS = {"ops": KEY}
NOW = 1_700_000_000.0


def request(command="add", **kw):
    kw.setdefault("now", NOW)
    if command == "add":
        kw.setdefault("person", "Ada")
        kw.setdefault("images", [("a.jpg", b"\xff\xd8fake")])
    return p.build_request(command, "ops", KEY, **kw)


def parsed(fields: dict, max_bytes: int = 1 << 20) -> dict:
    return p.parse_json(p.encode(fields), max_bytes)


def auth(fields: dict, now: float = NOW, keys=KEYS, max_age: float = 300.0, max_validity: float = 86400.0):
    return p.authenticate(fields, p.signed_form(fields), keys, max_age, max_validity, now=now)


def test_canonical_form_is_sorted_compact_utf8_and_excludes_the_signature():
    assert p.canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()
    fields = request()
    assert b" " not in p.signed_form(fields)
    assert b"signature" not in p.signed_form(fields)
    # key order and whitespace of the wire form do not matter: the agent re-canonicalises
    pretty = json.dumps(dict(reversed(list(fields.items()))), indent=2).encode()
    assert auth(p.parse_json(pretty, 1 << 20)).key_id == "ops"


def test_valid_request_round_trip():
    fields = parsed(request(target="agent-7"))
    a = auth(fields)
    assert (a.key_id, a.timestamp, a.valid_until) == ("ops", NOW, NOW + 300)
    req = p.validate(fields, max_image_bytes=1000)
    assert (req.command, req.person, req.target) == ("add", "Ada", "agent-7")
    assert req.images[0].data == b"\xff\xd8fake" and req.images[0].name == "a.jpg"


@pytest.mark.parametrize("change, code", [
    (lambda f: f.pop("signature"), p.UNSIGNED),
    (lambda f: f.update(signature=""), p.UNSIGNED),
    (lambda f: f.pop("key_id"), p.UNSIGNED),
    (lambda f: f.update(key_id="other"), p.UNKNOWN_KEY),
    (lambda f: f.update(signature="0" * 64), p.BAD_SIGNATURE),
    (lambda f: f.update(signature="not hex"), p.BAD_SIGNATURE),
    (lambda f: f.update(person="Mallory"), p.BAD_SIGNATURE),  # any change to a signed field
    (lambda f: f.update(target="*x"), p.BAD_SIGNATURE),
    (lambda f: f.update(extra=1), p.BAD_SIGNATURE),  # added fields are signed too
])
def test_tampered_or_unsigned_requests_are_refused(change, code):
    fields = parsed(request())
    change(fields)
    with pytest.raises(p.ProtocolError) as err:
        auth(fields)
    assert err.value.code == code


def test_wrong_key_is_a_bad_signature():
    fields = p.build_request("list", "ops", os.urandom(32), now=NOW)
    with pytest.raises(p.ProtocolError) as err:
        auth(parsed(fields))
    assert err.value.code == p.BAD_SIGNATURE


def test_freshness_window_and_expires():
    fields = parsed(request())
    assert auth(fields, now=NOW + 299)
    for now, code in ((NOW + 301, p.STALE), (NOW - 301, p.FUTURE)):
        with pytest.raises(p.ProtocolError) as err:
            auth(fields, now=now)
        assert err.value.code == code
    long_lived = parsed(request(valid_for=3600))
    assert auth(long_lived, now=NOW + 3599).valid_until == NOW + 3600
    with pytest.raises(p.ProtocolError) as err:
        auth(long_lived, now=NOW + 3601)
    assert err.value.code == p.STALE
    with pytest.raises(p.ProtocolError) as err:  # the agent caps how long a request may live
        auth(long_lived, max_validity=600)
    assert err.value.code == p.MALFORMED


def test_bad_nonce_or_timestamp_are_malformed():
    for change in ({"nonce": "short"}, {"nonce": 5}, {"timestamp": "yesterday"}, {"timestamp": None}):
        fields = p.build_request("list", "ops", KEY, now=NOW)
        fields.update(change)
        fields["signature"] = p.sign(p.signed_form(fields), KEY)  # correctly signed, still refused
        with pytest.raises(p.ProtocolError) as err:
            auth(parsed(fields))
        assert err.value.code == p.MALFORMED


@pytest.mark.parametrize("payload, code", [
    (b"{not json", p.MALFORMED),
    (b"\xff\xfe", p.MALFORMED),
    (b"[1, 2]", p.MALFORMED),
    (b'{"a": 1, "a": 2, "schema_version": 1}', p.MALFORMED),
    (b'{"schema_version": 1, "x": NaN}', p.MALFORMED),
    (b'{"command": "list"}', p.MALFORMED),
    (b'{"schema_version": 2}', p.UNSUPPORTED_VERSION),
    (b'{"schema_version": "1"}', p.UNSUPPORTED_VERSION),
    (b'{"schema_version": true}', p.UNSUPPORTED_VERSION),
    (b"[" * 100_000, p.MALFORMED),
])
def test_malformed_payloads(payload, code):
    with pytest.raises(p.ProtocolError) as err:
        p.parse_json(payload, 1 << 20)
    assert err.value.code == code


def test_size_cap_is_checked_before_parsing():
    with pytest.raises(p.ProtocolError) as err:
        p.parse_json(b"x" * 101, 100)  # not JSON at all: the size is what is reported
    assert err.value.code == p.TOO_LARGE


def test_validation_of_fields_and_images():
    big = os.urandom(2000)
    fields = request(images=[("ok.jpg", b"abc"), ("big.jpg", big)])
    fields["images"].append({"name": "bad", "data": "!!!not base64!!!"})
    req = p.validate(parsed(fields), max_image_bytes=1000)
    assert [(i.name, i.reason) for i in req.images] == [("ok.jpg", ""), ("big.jpg", p.TOO_LARGE),
                                                         ("bad", p.BAD_BASE64)]
    assert req.images[1].data is None
    for change, code in (({"command": "explode"}, p.UNKNOWN_COMMAND), ({"request_id": ""}, p.MALFORMED),
                         ({"request_id": "x" * 200}, p.MALFORMED), ({"images": []}, p.MALFORMED),
                         ({"images": [{"name": "x"}]}, p.MALFORMED), ({"person": None}, p.MALFORMED)):
        f = dict(request(), **change)
        with pytest.raises(p.ProtocolError) as err:
            p.validate(f, 1000)
        assert err.value.code == code, change
    rename = p.validate(request("rename", person="A", new_name="B"), 10)
    assert (rename.person, rename.new_name) == ("A", "B")
    with pytest.raises(p.ProtocolError):
        p.validate(request("rename", person="A"), 10)
    refs = p.validate(request("remove_images", person="A", refs=["0123456789abcdef.jpg", "ab" * 32]), 10)
    assert refs.refs == ["0123456789abcdef.jpg", "ab" * 32]
    with pytest.raises(p.ProtocolError):
        p.validate(request("remove_images", person="A", refs=["../../etc/passwd"]), 10)


def test_binary_v5_request_signs_properties_and_payload_hash():
    image = b"\x89PNG fake image bytes"
    props = p.build_binary_request("ops", KEY, "Ada", image, name="ada.png", target="agent-1", now=NOW)
    assert all(isinstance(v, str) for v in props.values())
    fields = p.binary_props(list(props.items()))
    assert auth_binary(fields, image).key_id == "ops"
    req = p.validate(fields, 1000, payload=image)
    assert (req.command, req.person, req.target, req.images[0].name, req.binary) == (
        "add", "Ada", "agent-1", "ada.png", True)
    with pytest.raises(p.ProtocolError) as err:  # another payload under the same properties
        auth_binary(fields, image + b"!")
    assert err.value.code == p.BAD_SIGNATURE
    changed = dict(fields, person="Mallory")
    with pytest.raises(p.ProtocolError) as err:
        auth_binary(changed, image)
    assert err.value.code == p.BAD_SIGNATURE
    assert p.binary_props([("foo", "bar")]) is None  # not a binary request: parse as JSON
    with pytest.raises(p.ProtocolError):
        p.binary_props([*props.items(), ("person", "again")])
    with pytest.raises(p.ProtocolError) as err:
        p.binary_props([("command", "add"), ("schema_version", "9")])
    assert err.value.code == p.UNSUPPORTED_VERSION


def auth_binary(fields, payload):
    return p.authenticate(fields, p.binary_signed_form(fields, payload), KEYS, 300, 86400, now=NOW, binary=True)


def test_key_file_formats_and_errors(tmp_path, caplog):
    hex_secret = "ab" * 32
    b64_secret = base64.b64encode(b"k" * 24).decode()
    url_secret = base64.urlsafe_b64encode(b"\xfb" * 18).decode().rstrip("=")
    path = tmp_path / "keys"
    path.write_text(f"# operators\n\nops:{hex_secret}\nold: base64:{b64_secret}\nurl:{url_secret}\n")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        keys = p.load_keys(path)
    assert keys == {"ops": bytes.fromhex(hex_secret), "old": b"k" * 24, "url": b"\xfb" * 18}
    assert "readable" not in caplog.text
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        p.load_keys(path)
    assert "group/others" in caplog.text
    for text, fragment in (("ops\n", "expected 'key_id:secret'"), ("ops:abcd\n", "at least 16"),
                           (f"a b:{hex_secret}\n", "key id"), (f"k:{hex_secret}\nk:{hex_secret}\n", "twice"),
                           ("k:***not a secret***\n", "neither hex nor base64"), ("# empty\n", "no key")):
        with pytest.raises(p.KeyFileError, match=fragment) as err:
            p.parse_keys(text, "f")
        assert hex_secret not in str(err.value)
    with pytest.raises(p.KeyFileError, match="no such key file"):
        p.load_keys(tmp_path / "missing")
    line = p.new_secret_line("fresh")
    assert len(p.parse_keys(line)["fresh"]) == 32


def test_results_are_signed_and_verifiable():
    result = p.make_result("agent-1", "r1", "add", p.OK, images=[])
    signed = p.sign_result(result, "ops", KEY)
    assert p.result_verified(signed, KEYS)
    assert not p.result_verified(result, KEYS)
    assert not p.result_verified(dict(signed, status="rejected"), KEYS)
    assert not p.result_verified(signed, {"ops": os.urandom(32)})
    error = p.make_result("agent-1", None, None, p.REJECTED, p.ProtocolError(p.UNSIGNED, "request is not signed"))
    assert error["error"] == {"code": "unsigned", "message": "request is not signed"}


def test_topics():
    t = Topics("faces/", "a1", "homeassistant/")
    assert (t.enroll_fleet, t.enroll, t.enroll_result) == ("faces/enroll", "faces/a1/enroll", "faces/a1/enroll/result")
    assert (t.events, t.status, t.stats, t.health) == ("faces/events", "faces/a1/status", "faces/a1/stats",
                                                       "faces/a1/health")
    assert t.ha_status == "homeassistant/status"
    assert t.ha_config("sensor", "n", "o") == "homeassistant/sensor/n/o/config"
    assert p.request_topic("faces", None) == "faces/enroll"
    assert p.request_topic("faces", "a1") == "faces/a1/enroll"
    assert all_results_topic("faces") == "faces/+/enroll/result"
    assert p.response_topic_ok("faces", "faces/replies/op-1")
    for bad in ("faces/events", "faces/replies", "faces/replies/+", "faces/replies/#", "other/replies/x"):
        assert not p.response_topic_ok("faces", bad)


def test_non_ascii_digit_schema_version_is_a_clean_rejection():
    """'²'.isdigit() is True but int('²') raises: an unsigned request must not reach a traceback."""
    for version in ("²", "١", "1\n", " 1", "99999999999999999999"):
        with pytest.raises(p.ProtocolError) as err:
            p.binary_props([("command", "add"), ("schema_version", version)])
        assert err.value.code in (p.UNSUPPORTED_VERSION, p.MALFORMED)
        assert "\n" not in err.value.message


def test_string_timestamp_in_a_signed_json_request_is_rejected():
    """The docs say number: a JSON request with "timestamp": "1700000000" is malformed, even when signed;
    a binary (MQTT v5) request carries strings and keeps working, but only decimal digits."""
    for change in ({"timestamp": str(int(NOW))}, {"expires": str(int(NOW) + 60)}):
        fields = p.build_request("list", "ops", KEY, now=NOW)
        fields.update(change)
        fields["signature"] = p.sign(p.signed_form(fields), KEY)
        with pytest.raises(p.ProtocolError) as err:
            auth(parsed(fields))
        assert err.value.code == p.MALFORMED and "string" in err.value.message
    image = b"img"
    for bad in ("1e9", "nan", "inf", " 1700000000", "0x10"):
        props = p.build_binary_request("ops", KEY, "Ada", image, now=NOW)
        props["timestamp"] = bad
        props["signature"] = p.sign(p.binary_signed_form(props, image), KEY)
        with pytest.raises(p.ProtocolError) as err:
            auth_binary(props, image)
        assert err.value.code == p.MALFORMED


def test_huge_numbers_and_a_float_version_are_clean_refusals():
    """Issue 25.7: a signed request with `timestamp: 10**400`, `expires: 10**400` or `track_id: 2**70` is
    malformed (it was internal_error with a traceback: float() and SQLite overflow), `schema_version: 1.0`
    is not version 1."""
    for change in ({"timestamp": 10**400}, {"expires": 10**400}, {"timestamp": -(10**400)}, {"timestamp": 1e300}):
        fields = p.build_request("list", "ops", KEY, now=NOW)
        fields.update(change)
        fields["signature"] = p.sign(p.signed_form(fields), KEY)
        with pytest.raises(p.ProtocolError) as err:
            auth(parsed(fields))
        assert err.value.code == p.MALFORMED and "unix seconds" in err.value.message, change
    for track_id in (2**70, 2**63, -1):
        fields = p.build_request("name", "ops", KEY, now=NOW, person="Ada", track_id=5)
        fields["track_id"] = track_id
        fields["signature"] = p.sign(p.signed_form(fields), KEY)
        with pytest.raises(p.ProtocolError) as err:
            p.validate(parsed(fields), 1 << 20)
        assert err.value.code == p.MALFORMED and "track_id" in err.value.message
    fields = p.build_request("name", "ops", KEY, now=NOW, person="Ada", track_id=2**63 - 1)
    assert p.validate(parsed(fields), 1 << 20).track_id == 2**63 - 1
    for version in (1.0, True, "1"):
        fields = p.build_request("list", "ops", KEY, now=NOW)
        fields["schema_version"] = version
        with pytest.raises(p.ProtocolError) as err:
            parsed(fields)
        assert err.value.code == p.UNSUPPORTED_VERSION, version
