"""Registry and ``@function``: loading a folder by path, every error with file:line and a fix,
payload types and their strict conversion, and config overrides of the decorator's options."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest

from runtime import Context, function
from runtime.config.registry import Registry, load_registry
from runtime.errors import (
    HandlerDefinitionError,
    PayloadError,
    PayloadTooLarge,
    RegistryError,
    UnknownFunction,
)
from runtime.function import Backoff, FunctionOptions, inspect_handler

HEADER = "from runtime import Context, Retry, function\nimport msgspec\n"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty functions folder; cwd is its parent so messages say ``functions/x.py``."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "functions"
    path.mkdir()
    return path


def put(folder: Path, name: str, body: str, *, header: bool = True) -> Path:
    path = folder / name
    path.write_text((HEADER if header else "") + textwrap.dedent(body), encoding="utf-8")
    return path


def line_of(path: Path, text: str) -> int:
    """1-based number of the first line of ``path`` containing ``text``."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def problems_of(folder: Path, overrides: dict[str, dict[str, Any]] | None = None) -> list[str]:
    with pytest.raises(RegistryError) as info:
        load_registry(folder, overrides)
    assert str(info.value).startswith("cannot load functions:\n  ")
    return info.value.problems


def only(problems: list[str]) -> str:
    assert len(problems) == 1, problems
    return problems[0]


# -- a good folder -------------------------------------------------------------------------


def test_good_folder_with_several_functions_per_module(folder: Path) -> None:
    maths = put(
        folder,
        "maths.py",
        """
        class Pair(msgspec.Struct, forbid_unknown_fields=True):
            a: int
            b: int

        @function(concurrency=4, timeout_s=5, max_attempts=7, backoff=(0.5, 8))
        async def add(event: Pair, ctx: Context) -> int:
            return event.a + event.b

        @function
        def double(event: int) -> int:
            return 2 * event

        @function(name="echo-any", executor="process")
        def echo(event):
            return event

        def not_registered(event: int) -> int:
            return event
        """,
    )
    put(folder, "hello.py", "@function\nasync def hello(event: str) -> str:\n    return event\n")
    put(folder, "plain.py", "VALUE = 1\n")  # no functions at all is fine

    registry = load_registry(folder)

    assert isinstance(registry, Registry)
    assert registry.names == ["add", "double", "echo-any", "hello"]
    assert len(registry) == 4
    assert "add" in registry
    assert "not_registered" not in registry
    assert registry.folder == folder.resolve()

    add = registry.get("add")
    assert add.options == FunctionOptions(
        concurrency=4, timeout_s=5.0, max_attempts=7, backoff=Backoff(base_s=0.5, max_s=8.0)
    )
    assert add.is_async
    assert add.takes_context
    assert add.executor == "async"
    assert add.source == f"{maths.resolve()}:{line_of(maths, '@function(concurrency=4')}"

    double = registry.get("double")
    assert double.options == FunctionOptions()
    assert (double.executor, double.takes_context, double.payload_type) == ("thread", False, int)
    assert registry.get("echo-any").executor == "process"
    assert registry.get("echo-any").payload_type is Any


def test_underscore_files_and_non_python_files_are_skipped(folder: Path) -> None:
    put(folder, "_helpers.py", "this is not python (\n", header=False)
    put(folder, "__init__.py", "raise RuntimeError('never imported')\n", header=False)
    put(folder, "notes.txt", "@function\ndef nope(event): ...\n", header=False)
    put(folder, "ok.py", "@function\ndef ok(event: int) -> int:\n    return event\n")
    assert load_registry(folder).names == ["ok"]


def test_subfolders_are_not_searched(folder: Path) -> None:
    (folder / "sub").mkdir()
    put(folder / "sub", "deep.py", "@function\ndef deep(event): ...\n")
    put(folder, "top.py", "@function\ndef top(event): ...\n")
    assert load_registry(folder).names == ["top"]


def test_the_decorated_handler_stays_a_plain_function(folder: Path) -> None:
    put(
        folder,
        "sq.py",
        "@function(concurrency=2)\ndef square(event: int) -> int:\n    return event * event\n",
    )
    spec = load_registry(folder).get("square")
    assert spec.handler(7) == 49


def test_unknown_function_gets_a_suggestion(folder: Path) -> None:
    put(folder, "hello.py", "@function\ndef hello(event): ...\n")
    registry = load_registry(folder)
    with pytest.raises(UnknownFunction) as info:
        registry.get("helo")
    assert str(info.value) == "unknown function 'helo'; did you mean 'hello'? (known: hello)"


def test_missing_folder_says_how_to_fix_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(RegistryError) as info:
        load_registry(missing)
    assert info.value.problems == [
        f"{missing}: functions folder not found; create it or set functions_dir"
    ]


# -- import errors ---------------------------------------------------------------------------


def test_import_error_is_reported_with_file_and_line(folder: Path) -> None:
    path = put(folder, "broken.py", "\n\nimport no_such_module_xyz\n")
    assert only(problems_of(folder)) == (
        f"functions/broken.py:{line_of(path, 'import no_such')}: cannot import: "
        "ModuleNotFoundError: No module named 'no_such_module_xyz'"
    )


def test_exception_at_import_points_at_the_innermost_line_of_the_file(folder: Path) -> None:
    path = put(
        folder,
        "raises.py",
        """
        def helper():
            raise ValueError("bad default")

        helper()
        """,
    )
    assert only(problems_of(folder)) == (
        f"functions/raises.py:{line_of(path, 'raise ValueError')}: cannot import: "
        "ValueError: bad default"
    )


def test_syntax_error_is_reported_with_file_and_line(folder: Path) -> None:
    path = put(folder, "syntax.py", "\n@function\ndef f(event:\n    return 1\n")
    message = only(problems_of(folder))
    assert message.startswith(
        f"functions/syntax.py:{line_of(path, 'def f(event:')}: cannot import: SyntaxError: "
    )


def test_every_bad_file_is_reported_and_good_ones_do_not_hide_them(folder: Path) -> None:
    put(folder, "a_bad.py", "import no_such_module_a\n")
    put(folder, "b_good.py", "@function\ndef good(event): ...\n")
    put(folder, "c_bad.py", "1 / 0\n")
    problems = problems_of(folder)
    assert len(problems) == 2
    assert problems[0].startswith("functions/a_bad.py:3: cannot import: ModuleNotFoundError")
    assert problems[1] == "functions/c_bad.py:3: cannot import: ZeroDivisionError: division by zero"


def test_a_fixed_file_imports_cleanly_on_the_next_load(folder: Path) -> None:
    put(folder, "later.py", "import no_such_module_later\n")
    problems_of(folder)
    put(folder, "later.py", "@function\ndef later(event): ...\n")
    assert load_registry(folder).names == ["later"]


# -- duplicate names -------------------------------------------------------------------------


def test_duplicate_function_name_across_two_files_names_both(folder: Path) -> None:
    first = put(folder, "one.py", "@function\ndef hello(event): ...\n")
    second = put(folder, "two.py", "\n\n@function\ndef hello(event): ...\n")
    assert only(problems_of(folder)) == (
        f"duplicate function name 'hello': {first.resolve()}:{line_of(first, '@function')} "
        f"and {second.resolve()}:{line_of(second, '@function')}; "
        "rename one with @function(name=...)"
    )


def test_explicit_name_clashing_with_another_function(folder: Path) -> None:
    put(folder, "one.py", "@function\ndef hello(event): ...\n")
    put(folder, "two.py", "@function(name='hello')\ndef greet(event): ...\n")
    message = only(problems_of(folder))
    assert message.startswith("duplicate function name 'hello': ")
    assert "one.py:" in message
    assert "two.py:" in message


def test_an_alias_of_a_handler_is_not_a_duplicate(folder: Path) -> None:
    put(folder, "hello.py", "@function\ndef hello(event): ...\n\nalias = hello\n")
    assert load_registry(folder).names == ["hello"]


# -- the folder is the security boundary -----------------------------------------------------


def test_escaping_symlink_is_refused_reported_and_never_imported(
    folder: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "imported.marker"
    outside = tmp_path / "outside"
    outside.mkdir()
    target = put(
        outside,
        "evil.py",
        f"""
        open({str(marker)!r}, "w").close()

        @function
        def evil(event): ...
        """,
    )
    (folder / "evil.py").symlink_to(target)
    put(folder, "ok.py", "@function\ndef ok(event): ...\n")

    message = only(problems_of(folder))

    assert message == (
        f"functions/evil.py: refused: it links to {target.resolve()}, outside the functions "
        f"folder {folder.resolve()}; copy the file into the folder instead"
    )
    assert not marker.exists()


def test_symlink_to_a_file_inside_the_folder_is_accepted(folder: Path) -> None:
    (folder / "lib").mkdir()
    target = put(folder / "lib", "impl.py", "@function\ndef impl(event): ...\n")
    (folder / "linked.py").symlink_to(target)
    registry = load_registry(folder)
    assert registry.names == ["impl"]
    assert registry.get("impl").source.startswith(str(target.resolve()))


def test_a_symlinked_folder_is_its_real_path(folder: Path, tmp_path: Path) -> None:
    put(folder, "ok.py", "@function\ndef ok(event): ...\n")
    link = tmp_path / "link-to-functions"
    link.symlink_to(folder, target_is_directory=True)
    assert load_registry(link).names == ["ok"]


# -- decorator options and signatures --------------------------------------------------------


def test_unknown_decorator_option_names_file_line_and_the_options(folder: Path) -> None:
    path = put(folder, "typo.py", "\n@function(max_retry=3)\ndef typo(event): ...\n")
    message = only(problems_of(folder))
    assert message.startswith(
        f"{path.resolve()}:{line_of(path, '@function(max_retry')}: unknown option 'max_retry'"
    )
    assert message.endswith(
        "(options: concurrency, max_in_flight, timeout_s, max_attempts, backoff, "
        "max_recoveries, priority, executor, max_payload_bytes, rate_limit, rate_burst, breaker, "
        "shards)"
    )


def test_unknown_decorator_option_max_retry_suggests_max_attempts(folder: Path) -> None:
    put(folder, "typo.py", "@function(max_retry=3)\ndef typo(event): ...\n")
    assert "unknown option 'max_retry'; did you mean 'max_attempts'?" in only(problems_of(folder))


def test_unknown_decorator_option_typo_gets_difflib_suggestion() -> None:
    with pytest.raises(
        HandlerDefinitionError, match=r"unknown option 'timeout'; did you mean 'timeout_s'\?"
    ):

        @function(timeout=3)
        def f(event: int) -> int:
            return event


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("@function(concurrency=0)\ndef f(event): ...\n", ": $.concurrency: expected int >= 1"),
        (
            "@function(priority='urgent')\ndef f(event): ...\n",
            ": $.priority: invalid enum value 'urgent'",
        ),
        (
            "@function(backoff=(-1, 5))\ndef f(event): ...\n",
            ": $.backoff.base_s: expected float >= 0.0",
        ),
        (
            "@function\ndef f(): ...\n",
            ": handler 'f' must take (event) or (event, ctx); got ()",
        ),
        (
            "@function\ndef f(event, ctx, extra): ...\n",
            ": handler 'f' must take (event) or (event, ctx); got (event, ctx, extra)",
        ),
        (
            "@function\ndef f(event, *, key): ...\n",
            ": handler 'f' must take (event) or (event, ctx); got (event, *, key)",
        ),
        (
            "@function(executor='thread')\nasync def f(event): ...\n",
            ": executor='thread' needs a plain `def` handler",
        ),
        (
            "@function(executor='async')\ndef f(event): ...\n",
            ": executor='async' needs an `async def` handler",
        ),
        (
            "@function\ndef f(event: str | bytes): ...\n",
            "is not supported: Type unions may not contain more than one str-like type",
        ),
        (
            "@function(name='has space')\ndef f(event): ...\n",
            ": function name 'has space' must be letters, digits, '_' or '-'",
        ),
    ],
    ids=[
        "out-of-range",
        "bad-choice",
        "bad-backoff",
        "no-params",
        "three-params",
        "required-kwonly",
        "async-in-thread",
        "def-on-loop",
        "unsupported-union",
        "bad-name",
    ],
)
def test_bad_definition_fails_loading_with_file_and_line(
    folder: Path, source: str, expected: str
) -> None:
    path = put(folder, "bad.py", source)
    message = only(problems_of(folder))
    assert message.startswith(f"{path.resolve()}:{line_of(path, '@function')}")
    assert expected in message


def test_plain_class_payload_type_is_refused_at_load(folder: Path) -> None:
    put(folder, "bad.py", "class Plain:\n    pass\n\n@function\ndef f(event: Plain): ...\n")
    message = only(problems_of(folder))
    assert "use a msgspec.Struct, a builtin type, or no annotation" in message


def test_optional_extra_parameters_are_allowed() -> None:
    @function
    def f(event: int, ctx: Context, verbose: bool = False, *, flag: int = 0) -> int:
        return event

    spec = inspect_handler(f)
    assert spec.takes_context
    assert spec.payload_type is int


# -- payload types and strict conversion -----------------------------------------------------


class Greet(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    times: int = 1


@function
async def greet(event: Greet, ctx: Context) -> str:
    return event.name * event.times


@function
def count(event: int) -> int:
    return event


@function
def anything(event, ctx):  # type: ignore[no-untyped-def]
    return event


@function(max_payload_bytes=16)
def tiny(event: list[int]) -> int:
    return len(event)


def test_payload_type_comes_from_the_first_parameter() -> None:
    assert inspect_handler(greet).payload_type is Greet
    assert inspect_handler(count).payload_type is int
    assert inspect_handler(anything).payload_type is Any
    assert inspect_handler(tiny).payload_type == list[int]


def test_struct_payload_converts_from_a_dict() -> None:
    assert inspect_handler(greet).convert({"name": "Ada"}) == Greet(name="Ada")


def test_any_payload_accepts_any_json_value() -> None:
    spec = inspect_handler(anything)
    for value in ({"a": [1, 2]}, [1, "x"], "s", 3, None):
        assert spec.convert(value) == value
        assert spec.decode(spec.encode(value)) == value


@pytest.mark.parametrize(
    ("handler", "payload", "message"),
    [
        (greet, {"name": 5}, "greet: $.name: expected str, got int"),
        (greet, {}, "greet: object missing required field name"),
        (greet, {"name": "a", "extra": 1}, "greet: object contains unknown field extra"),
        (greet, {"name": "a", "times": "2"}, "greet: $.times: expected int, got str"),
        (count, "5", "count: expected int, got str"),
        (count, 5.0, "count: expected int, got float"),
        (tiny, [1, "2"], "tiny: $[1]: expected int, got str"),
    ],
)
def test_conversion_is_strict_and_the_error_says_where(
    handler: Any, payload: Any, message: str
) -> None:
    spec = inspect_handler(handler)
    with pytest.raises(PayloadError) as info:
        spec.convert(payload)
    assert str(info.value) == message


def test_decode_json_is_strict_and_the_error_says_where() -> None:
    spec = inspect_handler(greet)
    assert spec.decode_json(b'{"name": "Ada", "times": 2}') == Greet("Ada", 2)
    with pytest.raises(PayloadError) as info:
        spec.decode_json(b'{"name": 5}')
    assert str(info.value) == "greet: $.name: expected str, got int"
    with pytest.raises(PayloadError, match=r"^greet: "):
        spec.decode_json(b"{not json")


def test_encode_round_trips_through_msgpack() -> None:
    spec = inspect_handler(greet)
    data = spec.encode(Greet("Ada", 3))
    assert spec.decode(data) == Greet("Ada", 3)
    assert spec.encode({"name": "Ada", "times": 3}) == data


def test_payload_over_max_payload_bytes_is_refused() -> None:
    spec = inspect_handler(tiny)
    assert spec.encode([1, 2, 3]) == msgspec.msgpack.encode([1, 2, 3])
    with pytest.raises(PayloadTooLarge) as info:
        spec.encode(list(range(100)))
    size = len(msgspec.msgpack.encode(list(range(100))))
    assert str(info.value) == f"tiny: payload is {size} bytes, over max_payload_bytes=16"
    with pytest.raises(PayloadTooLarge):
        spec.decode_json(b"[" + b"1," * 20 + b"1]")


# -- config overrides ------------------------------------------------------------------------


@pytest.fixture
def hello_folder(folder: Path) -> Path:
    put(
        folder,
        "hello.py",
        """
        @function(concurrency=8, max_attempts=5, backoff=(2, 60), priority="high")
        async def hello(event: str, ctx: Context) -> str:
            return event

        @function
        def other(event): ...
        """,
    )
    return folder


def test_config_overrides_are_merged_over_decorator_options(hello_folder: Path) -> None:
    registry = load_registry(
        hello_folder, {"hello": {"concurrency": 2, "backoff": {"max_s": 9}, "timeout_s": 1.5}}
    )
    assert registry.get("hello").options == FunctionOptions(
        concurrency=2,
        max_attempts=5,
        timeout_s=1.5,
        backoff=Backoff(base_s=2.0, max_s=9.0),
        priority="high",
    )
    assert registry.get("other").options == FunctionOptions()


def test_backoff_override_as_a_pair(hello_folder: Path) -> None:
    registry = load_registry(hello_folder, {"hello": {"backoff": [0.1, 0.2]}})
    assert registry.get("hello").options.backoff == Backoff(base_s=0.1, max_s=0.2)


def test_unknown_override_key_is_rejected(hello_folder: Path) -> None:
    message = only(problems_of(hello_folder, {"hello": {"max_retry": 3}}))
    assert message.startswith("config [functions.hello]: unknown option 'max_retry'")


def test_unknown_override_key_max_retry_suggests_max_attempts(hello_folder: Path) -> None:
    message = only(problems_of(hello_folder, {"hello": {"max_retry": 3}}))
    assert "did you mean 'max_attempts'?" in message


def test_bad_override_value_names_the_option(hello_folder: Path) -> None:
    message = only(problems_of(hello_folder, {"hello": {"concurrency": 0}}))
    assert message == "config [functions.hello]: $.concurrency: expected int >= 1"


def test_override_of_an_unknown_function_suggests_one(hello_folder: Path) -> None:
    message = only(problems_of(hello_folder, {"helo": {"concurrency": 1}}))
    assert message == (
        f"config [functions.helo]: no function 'helo' in {hello_folder}; did you mean 'hello'?"
    )


def test_override_cannot_give_an_async_handler_a_thread(hello_folder: Path) -> None:
    message = only(problems_of(hello_folder, {"hello": {"executor": "thread"}}))
    assert "executor='thread' needs a plain `def` handler" in message
    assert message.startswith(f"{(hello_folder / 'hello.py').resolve()}:")


def test_a_helper_module_of_the_folder_can_be_imported_by_name(folder: Path) -> None:
    # A unique name: sys.modules outlives this test.
    put(folder, "_shout_helper_4711.py", "def shout(s):\n    return s.upper()\n", header=False)
    put(
        folder,
        "uses_helper.py",
        "from _shout_helper_4711 import shout\n\n"
        "@function\nasync def loud(text: str) -> str:\n    return shout(text)\n",
    )
    registry = load_registry(folder)
    assert registry.names == ["loud"]  # the helper itself is not a function module
