"""banet.machine: what this machine is, for results names and for where an INT8 record holds."""


def test_int8_units_are_read_from_the_cpu_flags():
    from banet.machine import int8_units

    assert int8_units("model name\t: X\nflags\t\t: fpu sse avx512f avx512_vnni amx_tile amx_int8\n") == "amx_int8"
    assert int8_units("flags\t\t: fpu avx2 avx_vnni\n") == "avx_vnni"
    assert int8_units("flags\t\t: fpu avx2\n") == "none"
    assert int8_units("processor\t: 0\n") == "none"
    assert int8_units() in ("amx_int8", "avx512_vnni", "avx_vnni", "none", "unknown")
