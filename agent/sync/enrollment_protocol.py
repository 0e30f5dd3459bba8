"""The remote-enrollment wire protocol (schema version 1): topics, keys, signing, parsing. No MQTT here.

Requests arrive on `<prefix>/enroll` (every agent, `target` "*") or `<prefix>/<agent_id>/enroll` (one
agent, `target` = its id). Two encodings:

- JSON: one object, every field below plus `signature`; images inline as base64;
- MQTT v5 binary (`add` only): the payload is one encoded image, the fields are string user properties.

Authentication: `signature` = hex HMAC-SHA256, with the secret of `key_id`, over the canonical form:
JSON with sorted keys, no whitespace, UTF-8 (`canonical_json`) of the request without `signature`;
for binary requests of the user properties without `signature` plus `image_sha256` (hex SHA-256 of the
payload). `timestamp` (unix seconds) must be within max_age of the agent's clock; the optional `expires`
(unix seconds, at most max_validity after `timestamp`) lets an agent that was offline still serve a
queued request. `nonce` makes every request unique (replays are refused). Results are signed the same
way with the request's key, so the operator knows the answer comes from a key holder.
See docs/enrollment.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.topics import Topics, fleet_enroll_topic, replies_prefix

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FLEET = "*"  # `target` of a request sent to every agent

ADD = "add"
REMOVE_IMAGES = "remove_images"
FORGET = "forget"
RENAME = "rename"
RETRAIN = "retrain"
LIST = "list"
NAME = "name"  # enroll an unknown person (agent.sightings cluster) or a track as `person`
UNKNOWNS = "unknowns"  # list the unknown people seen
REJECT = "reject"  # an identification (event_id) was wrong
COMMANDS = (ADD, REMOVE_IMAGES, FORGET, RENAME, RETRAIN, LIST, NAME, UNKNOWNS, REJECT)
PERSON_COMMANDS = (ADD, REMOVE_IMAGES, FORGET, RENAME, NAME)
UNKNOWN_ID_RE = re.compile(r"^u[1-9][0-9]{0,17}$")
EVENT_ID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")

# request-level rejection codes
TOO_LARGE = "too_large"
MALFORMED = "malformed"
UNSUPPORTED_VERSION = "unsupported_version"
UNSIGNED = "unsigned"
UNKNOWN_KEY = "unknown_key"
BAD_SIGNATURE = "bad_signature"
STALE = "stale"
FUTURE = "future"
REPLAYED = "replayed"
WRONG_TARGET = "wrong_target"
UNKNOWN_COMMAND = "unknown_command"
INVALID_NAME = "invalid_name"
NOT_FOUND = "not_found"
NAME_TAKEN = "name_taken"
NO_USABLE_IMAGE = "no_usable_image"
BUSY = "busy"
INTERNAL_ERROR = "internal_error"
# image-level rejection codes (besides TOO_LARGE and the Gallery's no_face / several_faces / too_small /
# unreadable)
BAD_BASE64 = "bad_base64"
UNSUPPORTED_FORMAT = "unsupported_format"
ENROLLED_AS_OTHER = "enrolled_as_other"

# result statuses
OK = "ok"  # everything asked was done
PARTIAL = "partial"  # add: some images accepted, some rejected
REJECTED = "rejected"  # nothing was done (error.code says why)
ERROR = "error"  # the agent failed (internal error); nothing or part was done
ACCEPTED = "accepted"  # image status
REMOVED = "removed"

SIGNATURE = "signature"
IMAGE_SHA256 = "image_sha256"
MIN_SECRET_BYTES = 16
MAX_ID_LENGTH = 128
MAX_UNIX_SECONDS = 1e11  # timestamp / expires: beyond this (year 5138) a number is not a time
MAX_TRACK_ID = 2**63 - 1  # a track id is a SQLite INTEGER
KEY_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
NONCE_RE = re.compile(r"^[A-Za-z0-9_\-]{16,128}$")
SIGNATURE_RE = re.compile(r"^[0-9a-f]{64}$")
HEX_RE = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
# an image's sha256 (or a prefix of 16+), or a stored name: <stem>-<sha8>.<ext> (older agents: <sha16>.<ext>)
IMAGE_REF_RE = re.compile(r"^([0-9a-f]{16,64}|[\w.-]{1,48}-[0-9a-f]{8})(\.[A-Za-z0-9]{1,5})?$")
BINARY_FIELDS = {"schema_version", "request_id", "command", "key_id", "timestamp", "nonce", "target", "person",
                 "name", "expires", SIGNATURE, IMAGE_SHA256}


class ProtocolError(ValueError):
    """A request refused as a whole: `code` (stable, for programs) and a one-line message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the file and line (never the secret)."""


# ------------------------------------------------------------------------------------------------ topics

# the topic tree itself is agent/topics.py


def response_topic_ok(prefix: str, topic: str) -> bool:
    return (topic.startswith(replies_prefix(prefix) + "/") and len(topic) <= 1024
            and not any(c in topic for c in "+#\0"))


def request_topic(prefix: str, agent_id: str | None) -> str:
    """Where an operator publishes: one agent, or every agent when agent_id is None."""
    return fleet_enroll_topic(prefix) if agent_id is None else Topics(prefix, agent_id).enroll


# ------------------------------------------------------------------------------------------------ keys

def parse_secret(text: str) -> bytes:
    """A secret written as hex (`hex:` optional) or base64 (`base64:` optional, standard or URL-safe)."""
    text = text.strip()
    if text.startswith("hex:"):
        text = text[4:]
        if not HEX_RE.match(text):
            raise ValueError("not valid hex")
        return bytes.fromhex(text)
    if text.startswith("base64:"):
        text = text[7:]
    elif HEX_RE.match(text):
        return bytes.fromhex(text)
    try:
        padded = text + "=" * (-len(text) % 4)
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded.encode("ascii"))
        return base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise ValueError("neither hex nor base64") from None


def parse_keys(text: str, source: str = "key file") -> dict[str, bytes]:
    """`key_id:secret` lines ('#' comments and blank lines ignored) -> {key_id: secret bytes}."""
    keys: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, sep, secret = line.partition(":")
        key_id = key_id.strip()
        if not sep or not secret.strip():
            raise KeyFileError(f"{source}:{number}: expected 'key_id:secret'")
        if not KEY_ID_RE.match(key_id):
            raise KeyFileError(f"{source}:{number}: key id {key_id!r} must be 1-64 of A-Z a-z 0-9 _ . -")
        if key_id in keys:
            raise KeyFileError(f"{source}:{number}: key id {key_id!r} appears twice")
        try:
            value = parse_secret(secret)
        except ValueError as exc:
            raise KeyFileError(f"{source}:{number}: secret of {key_id!r} is {exc}") from None
        if len(value) < MIN_SECRET_BYTES:
            raise KeyFileError(f"{source}:{number}: secret of {key_id!r} is {len(value)} bytes, at least "
                               f"{MIN_SECRET_BYTES} needed (e.g. `openssl rand -hex 32`)")
        keys[key_id] = value
    if not keys:
        raise KeyFileError(f"{source}: no key in the file (lines 'key_id:secret')")
    return keys


def load_keys(path: str | os.PathLike) -> dict[str, bytes]:
    """Read a key file; warns when group or others may read it. KeyFileError when unusable."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read key file ({getattr(exc, 'strerror', None) or exc})") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        log.warning("%s: key file is readable or writable by group/others (mode %03o); chmod 600 it",
                    path, stat.S_IMODE(mode))
    return parse_keys(text, str(path))


def new_secret_line(key_id: str) -> str:
    """A fresh `key_id:hexsecret` line (32 random bytes)."""
    if not KEY_ID_RE.match(key_id):
        raise ValueError(f"key id {key_id!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    return f"{key_id}:{secrets.token_hex(32)}"


# ------------------------------------------------------------------------------------------------ signing

def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN: the bytes that are signed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def signed_form(fields: dict) -> bytes:
    """Canonical JSON of a request (or result) without its signature."""
    return canonical_json({k: v for k, v in fields.items() if k != SIGNATURE})


def binary_signed_form(props: dict[str, str], payload: bytes) -> bytes:
    """Canonical form of a binary (MQTT v5) request: its user properties without the signature plus
    the payload's SHA-256."""
    fields = {k: v for k, v in props.items() if k != SIGNATURE}
    fields[IMAGE_SHA256] = hashlib.sha256(payload).hexdigest()
    return canonical_json(fields)


def sign(data: bytes, secret: bytes) -> str:
    return hmac.new(secret, data, hashlib.sha256).hexdigest()


def signature_ok(data: bytes, signature: Any, secret: bytes) -> bool:
    """Constant-time check of a hex signature."""
    if not isinstance(signature, str) or not SIGNATURE_RE.match(signature):
        return False
    return hmac.compare_digest(sign(data, secret), signature)


# ------------------------------------------------------------------------------------------------ building

def _envelope(command: str, target: str, key_id: str, now: float | None, valid_for: float | None,
              request_id: str | None) -> dict:
    ts = int(time.time() if now is None else now)
    fields: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "request_id": request_id or uuid.uuid4().hex,
        "command": command,
        "key_id": key_id,
        "timestamp": ts,
        "nonce": secrets.token_hex(16),
        "target": target,
    }
    if valid_for:
        fields["expires"] = ts + int(math.ceil(valid_for))
    return fields


def build_request(command: str, key_id: str, secret: bytes, target: str = FLEET, *, person: str | None = None,
                  new_name: str | None = None, images: list[tuple[str, bytes]] | None = None,
                  refs: list[str] | None = None, now: float | None = None, valid_for: float | None = None,
                  request_id: str | None = None, unknown_id: str | None = None, track_id: int | None = None,
                  event_id: str | None = None, purge: bool = False) -> dict:
    """A signed JSON request. images: (file name, encoded bytes) for `add`; refs: sha256 or stored file
    names for `remove_images`; unknown_id or track_id for `name`; event_id for `reject`; purge for `forget`."""
    fields = _envelope(command, target, key_id, now, valid_for, request_id)
    for key, value in (("unknown_id", unknown_id), ("track_id", track_id), ("event_id", event_id)):
        if value is not None:
            fields[key] = value
    if purge:
        fields["purge"] = True
    if person is not None:
        fields["person"] = person
    if new_name is not None:
        fields["new_name"] = new_name
    if images is not None:
        fields["images"] = [{"name": name, "data": base64.b64encode(data).decode("ascii")} for name, data in images]
    if refs is not None:
        fields["images"] = list(refs)
    fields[SIGNATURE] = sign(signed_form(fields), secret)
    return fields


def encode(fields: dict) -> bytes:
    return canonical_json(fields)


def build_binary_request(key_id: str, secret: bytes, person: str, image: bytes, name: str = "image",
                         target: str = FLEET, now: float | None = None, valid_for: float | None = None,
                         request_id: str | None = None) -> dict[str, str]:
    """Signed user properties (all strings) of an MQTT v5 binary `add`; the payload is `image`."""
    fields = _envelope(ADD, target, key_id, now, valid_for, request_id)
    props = {k: str(v) for k, v in fields.items()}
    props["person"] = person
    props["name"] = name
    props[SIGNATURE] = sign(binary_signed_form(props, image), secret)
    return props


# ------------------------------------------------------------------------------------------------ parsing

def parse_json(payload: bytes, max_message_bytes: int) -> dict:
    """The request object of a JSON payload; the size cap is checked before parsing."""
    if len(payload) > max_message_bytes:
        raise ProtocolError(TOO_LARGE, f"message is {len(payload)} bytes, over the {max_message_bytes}-byte limit")
    try:
        fields = json.loads(payload.decode("utf-8"), object_pairs_hook=_no_duplicates,
                            parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise ProtocolError(MALFORMED, "payload is not UTF-8 JSON") from None
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(MALFORMED, f"payload is not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(fields, dict):
        raise ProtocolError(MALFORMED, f"payload must be a JSON object, not {type(fields).__name__}")
    check_version(fields.get("schema_version"))
    return fields


def binary_props(user_properties: list[tuple[str, str]] | None) -> dict[str, str] | None:
    """The request fields of an MQTT v5 binary request, or None if the message is not one (no `command`
    user property)."""
    pairs = list(user_properties or [])
    if not any(k == "command" for k, _ in pairs):
        return None
    props: dict[str, str] = {}
    for key, value in pairs:
        if key in props:
            raise ProtocolError(MALFORMED, f"user property {key!r} appears twice")
        if key not in BINARY_FIELDS:
            raise ProtocolError(MALFORMED, f"unknown user property {key!r}")
        props[key] = value
    version = props.get("schema_version")
    # ASCII digits only: str.isdigit() is also true for '²' or '١', which int() refuses or reads differently
    check_version(int(version) if isinstance(version, str) and re.fullmatch(r"[0-9]{1,9}", version) else version)
    return props


def check_version(version: Any) -> None:
    if version is None:
        raise ProtocolError(MALFORMED, "schema_version is missing")
    if isinstance(version, bool) or not isinstance(version, int) or version != SCHEMA_VERSION:  # 1.0 is not 1
        raise ProtocolError(UNSUPPORTED_VERSION,
                            f"schema_version {str(version)[:20]!r} is not supported (this agent speaks "
                            f"{SCHEMA_VERSION})")


def safe_request_id(fields: dict | None) -> str | None:
    """The request id to echo in an error result, if it is a sane string."""
    rid = (fields or {}).get("request_id")
    if isinstance(rid, str) and 0 < len(rid) <= MAX_ID_LENGTH and rid.isprintable():
        return rid
    return None


def _number(value: Any, name: str, strings: bool = False) -> float:
    """A JSON number; with `strings` (binary requests carry only strings) also its decimal digits."""
    if isinstance(value, str):
        if not strings or not re.fullmatch(r"-?[0-9]{1,15}(\.[0-9]{1,9})?", value):
            raise ProtocolError(MALFORMED, f"{name} must be a number (unix seconds)"
                                + ("" if strings else ", not a string"))
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(MALFORMED, f"{name} must be a number (unix seconds)")
    try:
        number = float(value)  # an int like 10**400 has no float: OverflowError
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or abs(number) > MAX_UNIX_SECONDS:
        raise ProtocolError(MALFORMED, f"{name} must be a number of unix seconds (at most {MAX_UNIX_SECONDS:.0e})")
    return number


@dataclass
class Authenticated:
    key_id: str
    nonce: str
    timestamp: float
    valid_until: float  # the request is refused after this (timestamp + max_age, or its `expires`)


def authenticate(fields: dict, signed: bytes, keys: dict[str, bytes], max_age: float, max_validity: float,
                 now: float | None = None, binary: bool = False) -> Authenticated:
    """Check key, signature (constant time) and freshness; replay is the caller's (it keeps the nonces).
    `binary`: an MQTT v5 binary request, whose fields are all strings (a JSON request needs numbers)."""
    if SIGNATURE not in fields or fields.get(SIGNATURE) in ("", None):
        raise ProtocolError(UNSIGNED, "request is not signed")
    key_id = fields.get("key_id")
    if not isinstance(key_id, str) or not key_id:
        raise ProtocolError(UNSIGNED, "request has no key_id")
    secret = keys.get(key_id)
    if secret is None:
        raise ProtocolError(UNKNOWN_KEY, f"key id {key_id[:64]!r} is not known to this agent")
    if not signature_ok(signed, fields.get(SIGNATURE), secret):
        raise ProtocolError(BAD_SIGNATURE, f"signature does not match (key {key_id!r})")
    now = time.time() if now is None else now
    ts = _number(fields.get("timestamp"), "timestamp", binary)
    nonce = fields.get("nonce")
    if not isinstance(nonce, str) or not NONCE_RE.match(nonce):
        raise ProtocolError(MALFORMED, "nonce must be 16-128 characters of A-Z a-z 0-9 _ -")
    if ts - now > max_age:
        raise ProtocolError(FUTURE, f"timestamp is {ts - now:.0f} s in the future (allowed {max_age:g} s; "
                            "check the clocks)")
    valid_until = ts + max_age
    if fields.get("expires") is not None:
        expires = _number(fields["expires"], "expires", binary)
        if expires - ts > max_validity:
            raise ProtocolError(MALFORMED, f"expires is {expires - ts:.0f} s after timestamp, at most "
                                f"{max_validity:g} s allowed")
        valid_until = max(valid_until, expires)
    if now > valid_until:
        raise ProtocolError(STALE, f"request is {now - ts:.0f} s old (valid for {valid_until - ts:.0f} s)")
    return Authenticated(key_id, nonce, ts, valid_until)


@dataclass
class Image:
    index: int
    name: str
    data: bytes | None  # None when the image was refused while parsing (see reason)
    reason: str = ""  # image-level rejection code
    message: str = ""


@dataclass
class Request:
    request_id: str
    command: str
    target: str
    person: str | None = None
    new_name: str | None = None
    images: list[Image] = field(default_factory=list)  # add
    refs: list[str] = field(default_factory=list)  # remove_images
    unknown_id: str | None = None  # name: the unknown person (u<n>)
    track_id: int | None = None  # name: or the track
    event_id: str | None = None  # reject: the identification
    purge: bool = False  # forget: delete the photos now instead of keeping them in the trash
    binary: bool = False
    key_id: str = ""


def _text(fields: dict, name: str, required: bool = True) -> str | None:
    value = fields.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ProtocolError(MALFORMED, f"{name} must be a non-empty string")
    return value


def validate(fields: dict, max_image_bytes: int, payload: bytes | None = None) -> Request:
    """The request's content (after authentication). Person names are validated by the caller (Gallery
    rules); images are base64-decoded here with the per-image cap (an oversized or undecodable image is
    refused alone, the others go on). `payload`: the image of a binary request."""
    request_id = safe_request_id(fields)
    if request_id is None:
        raise ProtocolError(MALFORMED, f"request_id must be 1-{MAX_ID_LENGTH} printable characters")
    command = _text(fields, "command")
    if command not in COMMANDS:
        raise ProtocolError(UNKNOWN_COMMAND, f"unknown command {command[:40]!r}; known: {', '.join(COMMANDS)}")
    target = _text(fields, "target")
    req = Request(request_id, command, target, binary=payload is not None, key_id=str(fields.get("key_id", "")))
    if command in PERSON_COMMANDS:
        req.person = _text(fields, "person")
    if command == RENAME:
        req.new_name = _text(fields, "new_name")
    if command == NAME:
        unknown_id, track_id = fields.get("unknown_id"), fields.get("track_id")
        if (unknown_id is None) == (track_id is None):
            raise ProtocolError(MALFORMED, "name needs exactly one of 'unknown_id' (like u3) and 'track_id'")
        if unknown_id is not None and (not isinstance(unknown_id, str) or not UNKNOWN_ID_RE.match(unknown_id)):
            raise ProtocolError(MALFORMED, "unknown_id must be an unknown person's id like u3")
        if track_id is not None and (not isinstance(track_id, int) or isinstance(track_id, bool)
                                     or not 0 <= track_id <= MAX_TRACK_ID):
            raise ProtocolError(MALFORMED, f"track_id must be an integer from 0 to {MAX_TRACK_ID}")
        req.unknown_id, req.track_id = unknown_id, track_id
    if command == FORGET:
        purge = fields.get("purge", False)
        if not isinstance(purge, bool):
            raise ProtocolError(MALFORMED, "purge must be true or false")
        req.purge = purge
    if command == REJECT:
        event_id = _text(fields, "event_id")
        if not EVENT_ID_RE.match(event_id):
            raise ProtocolError(MALFORMED, "event_id must be an event's 26-character id")
        req.event_id = event_id
    if payload is not None:
        if command != ADD:
            raise ProtocolError(MALFORMED, "binary (MQTT v5) requests carry one image: only 'add'")
        name = fields.get("name") or "image"
        req.images = [_image(0, name, payload, max_image_bytes)]
        return req
    if command == ADD:
        items = fields.get("images")
        if not isinstance(items, list) or not items:
            raise ProtocolError(MALFORMED, "add needs 'images': a non-empty list of {\"name\", \"data\"}")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("data"), str):
                raise ProtocolError(MALFORMED, f"images[{i}] must be an object with base64 'data'")
            name = item.get("name") if isinstance(item.get("name"), str) and item.get("name") else f"image{i}"
            data = item["data"]
            if len(data) * 3 // 4 > max_image_bytes + 3:
                req.images.append(Image(i, name[:200], None, TOO_LARGE,
                                        f"about {len(data) * 3 // 4} bytes, over the {max_image_bytes}-byte limit"))
                continue
            try:
                raw = base64.b64decode(data.encode("ascii"), validate=True)
            except (binascii.Error, ValueError, UnicodeEncodeError):
                req.images.append(Image(i, name[:200], None, BAD_BASE64, "data is not valid base64"))
                continue
            req.images.append(_image(i, name, raw, max_image_bytes))
    elif command == REMOVE_IMAGES:
        refs = fields.get("images")
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise ProtocolError(MALFORMED, "remove_images needs 'images': a non-empty list of sha256 or stored "
                                "file names")
        bad = [r for r in refs if not IMAGE_REF_RE.match(r)]
        if bad:
            raise ProtocolError(MALFORMED, f"not an image sha256 or stored name: {bad[0][:80]!r}")
        req.refs = list(refs)
    return req


def _image(index: int, name: str, data: bytes, max_image_bytes: int) -> Image:
    name = str(name)[:200]
    if len(data) > max_image_bytes:
        return Image(index, name, None, TOO_LARGE, f"{len(data)} bytes, over the {max_image_bytes}-byte limit")
    return Image(index, name, data)


# ------------------------------------------------------------------------------------------------ results

def iso_now(now: float | None = None) -> str:
    t = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"


def make_result(agent_id: str, request_id: str | None, command: str | None, status: str,
                error: ProtocolError | None = None, **extra: Any) -> dict:
    """A result message (unsigned; see `sign_result`)."""
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "type": "enroll_result",
        "request_id": request_id,
        "agent_id": agent_id,
        "command": command,
        "status": status,
        "error": None if error is None else {"code": error.code, "message": error.message},
        "timestamp": iso_now(),
    }
    out.update(extra)
    return out


def sign_result(result: dict, key_id: str, secret: bytes) -> dict:
    result = dict(result)
    result.pop(SIGNATURE, None)
    result["key_id"] = key_id
    result[SIGNATURE] = sign(signed_form(result), secret)
    return result


def result_verified(result: dict, keys: dict[str, bytes]) -> bool:
    """True if the result carries a valid signature by one of `keys`."""
    secret = keys.get(result.get("key_id")) if isinstance(result.get("key_id"), str) else None
    return secret is not None and signature_ok(signed_form(result), result.get(SIGNATURE), secret)
