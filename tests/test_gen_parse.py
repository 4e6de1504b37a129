"""The generator from inline C: libclang parses a header written here; no SPDK needed.

Each test writes a small header as ``<tmp>/include/spdk/t.h`` and runs the phases on
it (parse -> order -> layout -> render) with a stand-in install and export list.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gen_bindings
import pytest
from bindgen import model, source
from bindgen.layout import cfield_bits
from bindgen.model import Bindings
from bindgen.render_py import render_module
from bindgen.render_pyi import render_stub

from spdk_io._discover import SpdkInstall

pytestmark = pytest.mark.spdk_free  # runs where SPDK is not installed

TOOLS = Path(__file__).resolve().parent.parent / "tools"


ROOT = TOOLS.parent


def fake_install(tmp_path: Path, **headers: str) -> SpdkInstall:
    """A prefix holding only ``include/spdk/<name>.h`` for each keyword argument."""
    spdk = tmp_path / "include" / "spdk"
    spdk.mkdir(parents=True, exist_ok=True)
    for name, text in headers.items():
        (spdk / f"{name}.h").write_text(textwrap.dedent(text))
    return SpdkInstall(
        prefix=tmp_path,
        libdir=tmp_path / "lib",
        includedir=tmp_path / "include",
        version="0.0",
        syslibs=(),
        dpdk_libdirs=(),
        dpdk_libs=(),
    )


def bindings_of(tmp_path: Path, text: str, exports: tuple[str, ...] = ()) -> Bindings:
    install = fake_install(tmp_path, t=text)
    return gen_bindings.build_bindings(install, {n: "libspdk_t.so" for n in exports})


class _AnyFunctionLib:
    """Stands in for the SPDK library: every name is a fresh function object.

    ``keeps_gil`` picks the flavour: a ``ctypes.PyDLL`` (GIL held) or ``ctypes.CDLL``.
    """

    def __init__(self, keeps_gil: bool = False) -> None:
        self._libc = ctypes.PyDLL(None) if keeps_gil else ctypes.CDLL(None)

    def __getattr__(self, name: str) -> Any:
        return self._libc._FuncPtr(("abs", self._libc))


def execute(b: Bindings) -> dict[str, Any]:
    """Run the rendered module with the stand-in library; returns its namespace."""
    text = render_module(b)
    render_stub(b)  # renders without error
    source_text = (
        text.replace("from spdk_io._loader import lib as _lib", "_lib = _AnyFunctionLib()")
        .replace("from spdk_io._loader import pylib as _pylib", "_pylib = _AnyFunctionLib(True)")
        .replace(
            "from spdk_io._loader import require_version as _require_version",
            "_require_version = str  # no SPDK of release 0.0 to check against",
        )
    )
    assert "_loader import" not in source_text
    ns: dict[str, Any] = {"_AnyFunctionLib": _AnyFunctionLib}
    exec(compile(source_text, "synthetic", "exec"), ns)
    return ns


SYNTHETIC_HEADER = """
#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdatomic.h>

struct spdk_t_atomic { _Atomic(uint32_t) a; atomic_int b; _Atomic uint64_t c; };
struct spdk_t_packed { uint8_t a; uint64_t b; uint16_t c; } __attribute__((packed));
struct spdk_t_aligned { uint8_t a; } __attribute__((aligned(64)));
struct spdk_t_embed { uint8_t x; struct spdk_t_aligned al; struct spdk_t_packed p[2]; };
union spdk_t_mixed_bits {
    uint32_t raw;
    struct { uint8_t a : 1; uint8_t b : 7; uint16_t c : 15; uint16_t d : 1; uint8_t e; } bits;
};
struct spdk_t_straddle {
    uint8_t a; uint32_t b : 4; uint64_t c : 60; bool d : 1; int32_t e : 3; uint32_t : 0;
    uint8_t f : 2; uint32_t : 5; uint16_t g : 9;
};
struct spdk_t_anon {
    int kind;
    union { int i; double d; struct { uint16_t lo, hi; }; };
    char tail[3];
    uint8_t flex[];
};
typedef void spdk_t_fn(void *ctx, const char *msg);
typedef int (*spdk_t_fnp)(struct spdk_t_anon *a, char *buf, size_t len);
int spdk_t_variadic(const char *fmt, ...);
static inline int spdk_t_inline(void) { return 1; }
char *spdk_t_owned(spdk_t_fn *fn, spdk_t_fnp fnp, struct spdk_t_anon by_value);
const char *spdk_t_borrowed(struct spdk_t_straddle *s, char name[16]);
void spdk_t_unexported(void);
#define SPDK_T_INT (1u << 31)
#define SPDK_T_STR "a" "b"
#define SPDK_T_NEG (-1)
#define SPDK_T_EXPR (SPDK_T_INT | 1)
enum spdk_t_enum { SPDK_T_A = -1, SPDK_T_B = 5 };
"""


def test_synthetic_header_edge_cases(tmp_path: Path) -> None:
    """_Atomic, packed/aligned records, mixed bit-fields, nameless members, callbacks."""
    exports = ("spdk_t_variadic", "spdk_t_owned", "spdk_t_borrowed")
    bindings = bindings_of(tmp_path, SYNTHETIC_HEADER, exports)
    assert str(tmp_path) not in render_module(bindings)
    assert bindings.omitted == {
        "spdk_t_inline": model.REASON_INLINE,
        "spdk_t_unexported": model.REASON_NOT_EXPORTED,
    }
    ns = execute(bindings)
    for name, record in bindings.records.items():
        if record.fields is None:
            continue
        cls = ns[name]
        assert ctypes.sizeof(cls) == record.size, name
        for f in record.fields:
            if f.cname:
                got = cfield_bits(getattr(cls, f.cname), f.width is not None)
                assert got == (f.offset, f.width), (name, f.cname)
    assert ctypes.sizeof(ns["struct_spdk_t_atomic"]) == 16
    assert ns["struct_spdk_t_packed"]._pack_ == 1
    anon = ns["struct_spdk_t_anon"]()
    anon.lo, anon.hi = 1, 2
    assert anon.i == 0x20001
    bits = ns["union_spdk_t_mixed_bits"](raw=0xFFFFFFFF)
    assert (bits.bits.a, bits.bits.b, bits.bits.c, bits.bits.d) == (1, 0x7F, 0x7FFF, 1)

    assert ns["spdk_t_variadic"].argtypes == [ctypes.c_char_p]
    assert ns["spdk_t_owned"].restype is ctypes.POINTER(ctypes.c_char)
    assert ns["spdk_t_borrowed"].restype is ctypes.c_char_p
    assert ns["spdk_t_borrowed"].argtypes[1] is ctypes.c_char_p
    fn_param, fnp_param, by_value = ns["spdk_t_owned"].argtypes
    assert fn_param is ns["spdk_t_fn"] and fnp_param is ns["spdk_t_fnp"]
    assert by_value is ns["struct_spdk_t_anon"]
    assert ns["SPDK_T_INT"] == 1 << 31 and ns["SPDK_T_EXPR"] == (1 << 31) | 1
    assert ns["SPDK_T_STR"] == b"ab" and ns["SPDK_T_NEG"] == -1
    assert (ns["SPDK_T_A"], ns["SPDK_T_B"]) == (-1, 5)
    assert ns["enum_spdk_t_enum"] is ctypes.c_int


def test_macros_clang_can_evaluate_become_constants(tmp_path: Path) -> None:
    b = bindings_of(
        tmp_path,
        """
        #define SPDK_T_HEX 0x10
        #define SPDK_T_FLOAT 2.5
        #define SPDK_T_INF (1.0 / 0.0)
        #define SPDK_T_FUNC(x) ((x) + 1)
        #define SPDK_T_BLOCK { 1 }
        #define SPDK_T_UNKNOWN some_function()
        #define _SPDK_T_PRIVATE 3
        #define SPDK_T_EMPTY
        """,
    )
    values = {c.name: c.value for c in b.constants}
    assert values == {"SPDK_T_HEX": 16, "SPDK_T_FLOAT": 2.5, "SPDK_T_INF": float("inf")}
    ns = execute(b)
    assert ns["SPDK_T_INF"] == float("inf")


def test_build_paths_in_config_h_are_dropped(tmp_path: Path) -> None:
    install = fake_install(
        tmp_path,
        config="""
        #define SPDK_CONFIG_DPDK_DIR "/home/builder/dpdk"
        #define SPDK_CONFIG_ARCH "native"
        """,
    )
    b = gen_bindings.build_bindings(install, {})
    assert {c.name: c.value for c in b.constants} == {"SPDK_CONFIG_ARCH": b"native"}


def test_python_keywords_never_become_module_names(tmp_path: Path) -> None:
    """An enumerator, typedef or function named like a Python keyword stays out of the
    module (which must still import); users of such a typedef get its underlying type."""
    b = bindings_of(
        tmp_path,
        """
        #include <stdint.h>
        enum spdk_t_kw { lambda = 1, None = 2, SPDK_T_OK = 3 };
        typedef uint32_t async;
        struct spdk_t_uses { async a; };
        async spdk_t_get(async x);
        int pass(void);
        """,
        exports=("spdk_t_get", "pass"),
    )
    assert b.omitted == {"pass": model.REASON_KEYWORD}
    ns = execute(b)
    assert ns["SPDK_T_OK"] == 3
    assert "lambda" not in ns and "None" not in {c.name for c in b.constants}
    assert ns["spdk_t_get"].argtypes == [ctypes.c_uint32]
    assert ns["struct_spdk_t_uses"].a.size == 4


def test_unions_by_value(tmp_path: Path) -> None:
    """An integer-only union of 1/2/4/8 bytes travels as its bits; another is omitted."""
    b = bindings_of(
        tmp_path,
        """
        #include <stdint.h>
        union spdk_t_reg { uint32_t raw; struct { uint32_t en : 1; uint32_t rsvd : 31; } bits; };
        union spdk_t_flt { float f; uint32_t raw; };
        union spdk_t_reg spdk_t_get_reg(void);
        void spdk_t_set_reg(union spdk_t_reg reg);
        void spdk_t_set_flt(union spdk_t_flt value);
        """,
        exports=("spdk_t_get_reg", "spdk_t_set_reg", "spdk_t_set_flt"),
    )
    assert b.omitted == {"spdk_t_set_flt": model.REASON_UNION_BY_VALUE}
    ns = execute(b)
    assert ns["spdk_t_get_reg"].restype is ctypes.c_uint32
    assert ns["spdk_t_set_reg"].argtypes == [ctypes.c_uint32]
    assert "raw bits" in render_module(b)


def test_a_header_error_is_fatal_and_names_no_machine_path(tmp_path: Path) -> None:
    with pytest.raises(model.GenerationError) as info:
        bindings_of(tmp_path, "int spdk_t_f(spdk_t_undeclared x);\n")
    message = str(info.value)
    assert "clang cannot parse the SPDK headers" in message
    assert "<include>/spdk/t.h" in message and str(tmp_path) not in message


def test_clang_is_given_only_our_freestanding_headers(tmp_path: Path) -> None:
    install = fake_install(tmp_path, t="int x;")
    args = source.clang_args(install)
    assert "-nostdinc" in args
    assert str(source.CLANG_INCLUDE) in args
    assert f"-I{install.includedir}" in args
    assert not [a for a in args if "gcc" in a or "/clang/" in a or "lib/llvm" in a]


def test_excluded_headers_are_not_parsed(tmp_path: Path) -> None:
    install = fake_install(tmp_path, t="int x;", scsi='#include "nowhere/missing.h"\n')
    assert source.header_files(install) == ["t.h"]
    gen_bindings.build_bindings(install, {})  # scsi.h's missing include is never seen


def test_the_phases_need_no_spdk(tmp_path: Path) -> None:
    """With no SPDK to be found, the whole pipeline runs on inline C and loads nothing."""
    install_dir = tmp_path / "t"
    fake_install(install_dir, t="struct spdk_t_s { int a; };\nint spdk_t_f(int x);\n")
    code = f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(TOOLS)!r})
        import gen_bindings
        from bindgen.render_py import render_module
        from bindgen.render_pyi import render_stub
        from spdk_io._discover import SpdkInstall, SpdkNotFoundError, find_spdk
        try:
            find_spdk()
        except SpdkNotFoundError:
            print("no SPDK")
        p = Path({str(install_dir)!r})
        install = SpdkInstall(p, p / "lib", p / "include", "0.0", (), (), ())
        b = gen_bindings.build_bindings(install, {{"spdk_t_f": "libspdk_t.so"}})
        print(len(render_module(b)) > 0, len(render_stub(b)) > 0)
        maps = open("/proc/self/maps").read()
        print("libspdk" in maps, "librte" in maps, "spdk_io._loader" in sys.modules)
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "SPDK_IO_PREFIX": str(tmp_path / "nowhere")},
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["no", "SPDK", "True", "True", "False", "False", "False"]


def test_a_header_error_reported_at_the_umbrella_file_is_still_fatal(tmp_path: Path) -> None:
    """A header that ends mid-declaration: clang reports it where the next token is, in
    the umbrella file; only the macro probes' own errors may be ignored there."""
    with pytest.raises(model.GenerationError, match="clang cannot parse the SPDK headers"):
        bindings_of(tmp_path, "int spdk_t_f(void)\n")
