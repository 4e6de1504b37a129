"""The binding generator's phases (``tools/gen_bindings.py`` is the entry point).

Each phase is one module that takes the previous phase's result:

1. :mod:`bindgen.source` - which headers, clang's arguments, the translation unit
   (one umbrella file plus a probe per ``#define``), the installed libraries' exports;
2. :mod:`bindgen.parse` - the clang walk: translation unit -> :mod:`bindgen.model`;
3. :mod:`bindgen.order` - typedefs and record layouts in dependency order;
4. :mod:`bindgen.layout` - each record's ctypes ``_fields_``, built and checked
   against clang's offsets;
5. :mod:`bindgen.gil` - which functions release the GIL during the call (the table);
6. :mod:`bindgen.render_py` / :mod:`bindgen.render_pyi` - the module and its stub;
7. :mod:`bindgen.report` - coverage for humans.

Finding SPDK is not a phase of ours: ``spdk_io._discover`` does it, for the runtime
and for the generator alike, without loading anything.  The pure phases (model,
order, layout, gil, both renderers) need neither clang nor SPDK.
"""
