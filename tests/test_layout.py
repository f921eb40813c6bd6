"""Parsers of each file, read as recover reads them and as containerd 0.2.9 does."""

from __future__ import annotations

import json
import re

import msgspec
import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from recover.fsread import FileFact
from recover.generations.containerd_0_2 import files as layout
from recover.generations.containerd_0_2.builder import process_json, state_json


def fact(data: bytes | None, rel="c/init/x", kind="file") -> FileFact:
    return FileFact(rel, kind if data is not None or kind != "file" else "missing", data=data,
                    size=None if data is None else len(data), mtime_ns=1)


@pytest.mark.parametrize("data, recover, containerd, codes", [
    (b"123", 123, 123, []),
    (b"123\n", 123, None, ["F032"]),
    (b" 123", 123, None, ["F032"]),
    (b"+123", 123, 123, ["F044"]),  # Go's Atoi takes a sign: containerd loads it, so does recover
    (b"+0", None, 0, ["F031"]),
    (b"0", None, 0, ["F031"]),
    (b"-1", None, -1, ["F031"]),
    (b"", None, None, ["F031"]),
    (b"12a", None, None, ["F031"]),
    (b"\xff", None, None, ["F005", "F031"]),
    (b"\0\0", None, None, ["F004", "F031"]),
    (b"\xd9\xa3", None, None, ["F031"]),  # an Arabic-Indic digit: int() would take it, Go does not
    (b"99999999999999999999", None, None, ["F031"]),
])
def test_pid(data, recover, containerd, codes):
    parsed = layout.parse_pid(fact(data))
    assert (parsed.value, parsed.containerd) == (recover, containerd)
    assert [f.code for f in parsed.findings] == codes


def test_pid_missing():
    parsed = layout.parse_pid(fact(None))
    assert (parsed.value, parsed.containerd, parsed.containerd_read) == (None, None, "missing")
    assert [f.code for f in parsed.findings] == ["F030"]


@pytest.mark.parametrize("data, value, source, state, codes", [
    (None, None, None, "not-exited", []),
    (b"", None, None, "not-exited", []),
    (b"0", 0, "exitStatus", "valid", []),
    (b"137", 137, "exitStatus", "valid", []),
    (b"255", 255, "exitStatus", "valid", []),
    (b"256", None, None, "valid", ["F039"]),  # containerd reports 256; no process exits with it
    (b"4294967295", None, None, "valid", ["F039"]),
    (b"256\n", None, None, "invalid", ["F037", "F039"]),
    (b"4294967296", None, None, "invalid", ["F035"]),
    (b"0\n", 0, "exitStatus", "invalid", ["F037"]),
    (b"%!u(uint32=255)", 255, "daemon-format-bug", "invalid", ["F036"]),
    (b"%!u(uint32=0)", 0, "daemon-format-bug", "invalid", ["F036"]),
    (b"-1", None, None, "invalid", ["F035"]),
    (b"0x10", None, None, "invalid", ["F035"]),
    (b"\0\0\0", None, None, "invalid", ["F004", "F035"]),
])
def test_exit_status(data, value, source, state, codes):
    parsed = layout.parse_exit_status(fact(data))
    assert (parsed.value, parsed.source, parsed.containerd) == (value, source, state)
    assert [f.code for f in parsed.findings] == codes


def test_exit_status_above_255_is_what_containerd_reports_and_no_status_for_recover():
    parsed = layout.parse_exit_status(fact(b"256"))
    assert (parsed.value, parsed.containerd, parsed.containerd_status) == (None, "valid", 256)
    (f,) = parsed.findings
    assert "256" in f.message and "lost" in f.message and "containerd would report 256" in f.message
    assert layout.parse_exit_status(fact(b"7")).containerd_status == 7
    assert layout.parse_exit_status(fact(b"7\n")).containerd_status is None  # containerd cannot parse it


def test_exit_status_fifo_blocks_containerd():
    parsed = layout.parse_exit_status(FileFact("c/init/exitStatus", "fifo"))
    assert parsed.containerd == "blocks" and parsed.value is None
    assert [f.code for f in parsed.findings] == ["F007"]


@pytest.mark.parametrize("data, value, raw, codes", [
    (b"194198", 194198, b"194198", []),
    (b"194198\n", 194198, b"194198\n", ["F034"]),
    (b"", None, b"", []),  # empty: containerd assumes the same process
    (b"abc", None, b"abc", ["F034"]),
    (b"99999999999999999999", None, b"99999999999999999999", ["F034"]),  # beyond 64 bits
])
def test_starttime(data, value, raw, codes):
    parsed = layout.parse_starttime(fact(data))
    assert (parsed.value, parsed.containerd_raw) == (value, raw)
    assert [f.code for f in parsed.findings] == codes


def doc(data: bytes, schema=layout.PROCESS_SCHEMA, code="F021"):
    return layout.parse_json_doc(fact(data, "c/init/process.json"), schema, code)


def test_process_json_shapes_of_every_02x_release():
    p = process_json(["sleep", "1"])
    assert doc(json.dumps(p).encode()).containerd_decodes
    p.pop("consoleSize")
    p["labels"] = None
    p["runtimeArgs"] = None
    p["someFutureField"] = {"kept": True}
    parsed = doc(json.dumps(p).encode())
    assert parsed.containerd_decodes and parsed.findings == ()
    assert parsed.value["someFutureField"] == {"kept": True}  # unknown fields are kept


def test_capabilities_as_a_list_is_the_0_2_8_shape_that_0_2_9_drops():
    parsed = doc(json.dumps(process_json(["sleep", "1"], capabilities_as_list=True)).encode())
    assert not parsed.containerd_decodes
    assert [f.code for f in parsed.findings] == ["F022"]
    assert parsed.value["capabilities"]  # recover still reads it


@pytest.mark.parametrize("patch, ok", [
    ({"args": "sleep"}, False),
    ({"terminal": 1}, False),
    ({"user": {"uid": -1}}, False),
    ({"user": {"uid": 4294967296}}, False),
    ({"user": {"uid": 1.5}}, False),
    ({"rootUID": -5}, True),
    ({"Args": ["x"]}, True),  # Go matches keys case-insensitively
    ({"ARGS": "x"}, False),
    ({"args": None}, True),  # null decodes into anything
    ({"rlimits": [{"type": "RLIMIT_NOFILE", "hard": -1, "soft": 1}]}, False),
])
def test_go_type_rules(patch, ok):
    p = process_json(["sleep", "1"])
    p.update(patch)
    assert doc(json.dumps(p).encode()).containerd_decodes is ok


def test_trailing_bytes_after_the_json_value():
    good = json.dumps(process_json(["sleep", "1"])).encode()
    nul = doc(good + b"\0" * 64)
    assert nul.containerd_decodes and [f.code for f in nul.findings] == ["F004"]
    junk = doc(good + b"}garbage")
    assert junk.containerd_decodes and [f.code for f in junk.findings] == ["F003"]


@pytest.mark.parametrize("data, codes", [
    (b"", ["F002"]), (b"{", ["F003"]), (b"[1]", ["F021"]), (b"null", []), (b"\xff{}", ["F005", "F003"]),
    (b"[" * 100000, ["F003"]), (b'{"terminal": NaN}', ["F003"]), (b'{"rootUID": Infinity}', ["F003"]),
])
def test_bad_documents(data, codes):
    parsed = doc(data)
    assert [f.code for f in parsed.findings] == codes


def test_state_json():
    parsed = doc(json.dumps(state_json("/b")).encode(), layout.STATE_SCHEMA, "F020")
    assert parsed.containerd_decodes and parsed.value["bundle"] == "/b"


_DECIMALS = st.from_regex(rb"\A[ +-]?[0-9]{1,27}\Z") | st.binary(max_size=8)


@given(_DECIMALS)
def test_decimal_reads_are_the_regular_expressions_go_accepts(data):
    """The parsers tell decimal bytes with bytes.isdigit(); strconv's grammar written as regular
    expressions ([+-]?[0-9]+ for Atoi, [0-9]+ for ParseUint) gives the same values."""
    atoi = re.fullmatch(rb"[+-]?[0-9]+", data)
    assert layout.go_atoi(data) == (int(data) if atoi and len(data) <= 25 and -(1 << 63) <= int(data) < (1 << 63)
                                    else None)
    uint = re.fullmatch(rb"[0-9]+", data)
    assert layout.go_parse_uint32(data) == (int(data) if uint and len(data) <= 25 and int(data) < (1 << 32) else None)


@given(st.binary(max_size=64))
def test_small_file_parsers_never_raise(data):
    f = fact(data)
    layout.parse_pid(f)
    layout.parse_starttime(f)
    layout.parse_exit_status(f)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids), max_leaves=30))
def test_json_parser_never_raises(value):
    data = json.dumps(value).encode()
    for schema, code in ((layout.PROCESS_SCHEMA, "F021"), (layout.STATE_SCHEMA, "F020")):
        parsed = layout.parse_json_doc(fact(data), schema, code)
        assert parsed.containerd_decodes in (True, False)


# --- the typed check (msgspec, in C) against the Python check it stands in for ----------------

_EDGE_INTS = (0, 1, -1, 255, 256, (1 << 32) - 1, 1 << 32, (1 << 63) - 1, 1 << 63, -(1 << 63), (1 << 64) - 1)
_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.sampled_from(_EDGE_INTS)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3), max_leaves=8)


def _shaped(kind, *, variants: bool):
    """Values for a field of a Go type: mostly of that type (at its edges), sometimes anything;
    with `variants`, objects also get keys that differ from a field's name only in case."""
    if isinstance(kind, layout._Struct):
        fields = st.fixed_dictionaries({}, optional={k: _shaped(t, variants=variants) for k, t in kind.fields.items()})
        if variants:
            other = st.dictionaries(st.sampled_from([k.upper() for k in kind.fields] + [k.title() for k in kind.fields]
                                                    + ["unknown"]), _ANY_JSON, max_size=2)
            fields = st.builds(lambda a, b: {**b, **a}, fields, other)
        typed = fields
    elif isinstance(kind, layout._List):
        typed = st.lists(_shaped(kind.item, variants=variants), max_size=4)
    elif isinstance(kind, layout._Int):
        typed = st.integers(max(kind.low - 2, -(1 << 63)), min(kind.high + 2, (1 << 64) - 1)) | st.sampled_from(_EDGE_INTS)
    elif isinstance(kind, layout._Bool):
        typed = st.booleans()
    else:
        typed = st.text(max_size=4)
    return st.one_of(typed, typed, typed, st.none(), _ANY_JSON)


SCHEMAS = (layout.PROCESS_SCHEMA, layout.STATE_SCHEMA)


def _exact_keys(schema, value) -> bool:
    """Every key of an object, and of the objects in its fields, names a field exactly."""
    if not isinstance(value, dict):
        return True
    if not set(value) <= set(schema.fields):
        return False
    for key, kind in schema.fields.items():
        item = value.get(key)
        if isinstance(kind, layout._Struct) and not _exact_keys(kind, item):
            return False
        if isinstance(kind, layout._List) and isinstance(kind.item, layout._Struct) and isinstance(item, list):
            if not all(_exact_keys(kind.item, x) for x in item):
                return False
    return True


@given(st.sampled_from(SCHEMAS).flatmap(lambda s: st.tuples(st.just(s), _shaped(s, variants=False))))
def test_typed_check_agrees_with_the_python_check(generated):
    """Where keys are exact, msgspec accepts a document exactly when the Python check does."""
    schema, doc = generated
    doc = orjson.loads(orjson.dumps(doc))  # as orjson decodes it (what the typed check is given)
    assume(isinstance(doc, dict) and _exact_keys(schema, doc))
    try:
        msgspec.convert(doc, schema.typed())
        accepted = True
    except msgspec.ValidationError:
        accepted = False
    assert accepted == (schema.error(doc, "") is None)


@given(st.sampled_from(SCHEMAS).flatmap(lambda s: st.tuples(st.just(s), _shaped(s, variants=True))))
def test_type_error_is_the_python_checks_answer(generated):
    """Keys in another case, unknown keys, any value: the answer is the Python check's, message included."""
    schema, doc = generated
    doc = orjson.loads(orjson.dumps(doc))
    assert layout.type_error(schema, doc, decoded_by_orjson=True) == schema.error(doc, "")


def test_a_key_in_another_case_is_checked_as_go_does():
    """Go matches keys case-insensitively: a typed decoder alone would ignore "Terminal"."""
    doc = {"Terminal": "yes", "args": ["sh"]}
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert(doc, layout.PROCESS_SCHEMA.typed())
    assert layout.type_error(layout.PROCESS_SCHEMA, doc, decoded_by_orjson=True) == "terminal: want true or false"


def test_numbers_past_pythons_digit_limit_are_just_bad_numbers():
    long = b"1" * 5000
    assert layout.parse_pid(fact(long)).value is None
    assert layout.parse_exit_status(fact(long)).containerd == "invalid"
    assert layout.parse_starttime(fact(long)).value is None


# --- the common case first: each parser's shortcut against its full reading --------------------

_SMALL_FILES = (st.from_regex(rb"\A[ +-]?0*[0-9]{0,25}[\n ]?\Z") | st.sampled_from([b"0", b"255", b"256", b"4194304",
                                                                                    b"4194305", b"00000001"])
                | st.binary(max_size=12))
_FACTS = st.builds(fact, _SMALL_FILES) | st.sampled_from(
    [FileFact("c/init/x", "missing"), FileFact("c/init/x", "fifo"), FileFact("c/init/x", "symlink", detail="/etc"),
     FileFact("c/init/x", "file", problem="too-big", size=2 << 20), FileFact("c/init/x", "file", problem="vanished"),
     FileFact("c/init/x", "file", problem="denied", detail="Permission denied")])


@given(_FACTS)
def test_small_file_shortcuts_read_every_file_as_the_full_readings_do(f):
    assert layout.parse_pid(f) == layout.read_pid_in_full(f)
    assert layout.parse_starttime(f) == layout.read_starttime_in_full(f)
    assert layout.parse_exit_status(f) == layout.read_exit_status_in_full(f)


@given(st.sampled_from(SCHEMAS).flatmap(lambda s: st.tuples(st.just(s), _shaped(s, variants=True))),
       st.sampled_from([b"", b"\0\0", b" \n", b"}", b"\xff"]), st.booleans())
def test_json_shortcut_reads_every_document_as_the_full_reading_does(generated, tail, pretty):
    """Documents of every shape, with bytes after them or not: the same value, the same findings."""
    schema, value = generated
    data = (json.dumps(value, indent=1) if pretty else json.dumps(value, separators=(",", ":"))).encode() + tail
    code = "F021" if schema is layout.PROCESS_SCHEMA else "F020"
    f = fact(data, "c/init/process.json")
    assert layout.parse_json_doc(f, schema, code) == layout.read_json_doc_in_full(f, schema, code)
