#!/usr/bin/env python3
# tests/fuzz/make_seeds.py: writes the seed corpora of the fuzz targets, corpus/npy/ and corpus/cli/
# (checked in; rerun after changing this file):   python3 tests/fuzz/make_seeds.py
# Seeds are valid inputs and near misses (one field wrong), so that the fuzzer starts next to every branch of
# the reader and the option parser instead of having to discover the format. Standard library only.
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def npy(header, data, major=1, minor=0, length=None):
    prefix = 10 if major == 1 else 12
    text = header
    while (prefix + len(text) + 1) % 64:
        text += " "
    text += "\n"
    n = len(text) if length is None else length
    size = struct.pack("<H", n) if major == 1 else struct.pack("<I", n)
    return b"\x93NUMPY" + bytes([major, minor]) + size + text.encode("latin-1") + data


def unpadded(header, data):
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def dict_text(descr, shape, fortran="False"):
    return "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)


def floats(fmt, values):
    return b"".join(struct.pack(fmt, v) for v in values)


def npy_seeds():
    six = floats("<f", [1.5, -2.0, 0.25, 3.0, 4.0, -0.5])
    good = npy(dict_text("<f4", "(2, 3)"), six)
    seeds = {
        "valid_f4_v1": good,
        "valid_f8_v2": npy(dict_text("<f8", "(3, 2)"), floats("<d", [1, 2, 3, 4, 5, 6]), major=2),
        "valid_f2_v3": npy(dict_text("<f2", "(2, 2)"), struct.pack("<4H", 0x3C00, 0x7C00, 0x0001, 0x7E00), major=3),
        "valid_f4_rank4": npy(dict_text("<f4", "(1, 2, 3, 1)"), six),
        "valid_f4_nan_inf": npy(dict_text("<f4", "(3,)"), floats("<f", [float("nan"), float("inf"), -0.0])),
        "valid_bool_mask": npy(dict_text("|b1", "(4,)"), bytes([1, 1, 0, 1])),
        "valid_i8_mask": npy(dict_text("<i8", "(1, 3)"), struct.pack("<3q", 1, 0, 1)),
        "valid_u1_mask_values_2": npy(dict_text("|u1", "(3,)"), bytes([0, 1, 2])),
        "valid_i2": npy(dict_text("<i2", "(2,)"), struct.pack("<2h", -1, 7)),
        "valid_u8": npy(dict_text("<u8", "(1,)"), struct.pack("<Q", 2**64 - 1)),
        "valid_scalar": npy(dict_text("<f4", "()"), floats("<f", [2.0])),
        "valid_zero_size": npy(dict_text("<f4", "(0, 3)"), b""),
        "valid_zero_times_huge": npy(dict_text("<f4", "(0, 9223372036854775807)"), b""),
        "valid_double_quotes_no_padding": unpadded(b'{"shape": (2, 3), "fortran_order": False, "descr": "<f4"}', six),
        "valid_numpy2_growth_spaces": npy(dict_text("<f4", "(2, 3)") + " " * 30, six),
        "bad_magic": b"\x93NUMPZ" + good[6:],
        "bad_version_4": npy(dict_text("<f4", "(2, 3)"), six, major=4),
        "bad_minor_version": npy(dict_text("<f4", "(2, 3)"), six, minor=1),
        "truncated_prefix": good[:9],
        "truncated_header": good[:40],
        "truncated_data": good[:-5],
        "oversized_header_length": npy(dict_text("<f4", "(2, 3)"), six, length=65535),
        "oversized_header_length_v2": npy(dict_text("<f4", "(2, 3)"), six, major=2, length=0xFFFFFFF0),
        "lying_shape": npy(dict_text("<f4", "(1000, 1000)"), six),
        "extra_data": npy(dict_text("<f4", "(2, 2)"), six),
        "overflow_shape": npy(dict_text("<f4", "(4294967296, 4294967296)"), six),
        "overflow_dimension": npy(dict_text("<f4", "(99999999999999999999,)"), six),
        "big_endian": npy(dict_text(">f4", "(2, 3)"), floats(">f", [1, 2, 3, 4, 5, 6])),
        "fortran_order": npy(dict_text("<f4", "(2, 3)", "True"), six),
        "structured_dtype": npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,), }", six),
        "unsupported_dtype_c8": npy(dict_text("<c8", "(3,)"), six),
        "object_dtype": npy(dict_text("|O", "(6,)"), six),
        "missing_key": npy("{'descr': '<f4', 'shape': (2, 3), }", six),
        "duplicate_key": npy("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", six),
        "unknown_key": npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1, }", six),
        "negative_dimension": npy(dict_text("<f4", "(-2, 3)"), six),
        "one_tuple_no_comma": npy(dict_text("<f4", "(6)"), six),
        "unterminated_string": npy("{'descr': '<f4, 'fortran_order': False, 'shape': (6,), }", six),
        "text_after_dict": npy(dict_text("<f4", "(6,)") + " x", six),
        "empty": b"",
        "npz_archive": b"PK\x03\x04\x14\x00\x00\x00" + good,
        "i8_beyond_2_53": npy(dict_text("<i8", "(2,)"), struct.pack("<2q", 2**62 + 1, -(2**62))),
    }
    return seeds


# Byte 0 and 1 index fuzz_cli.cpp's kLengths: 0 -> 1, 4 -> 16, 6 -> 32, 7 -> 33, 8 -> 64, 11 -> 1000,
# 13 -> 65536, 14 -> 2^31, 15 -> 2^40.
def cli(nq, nk, *args):
    return bytes([nq, nk]) + b"\0".join(a.encode() for a in args)


def cli_seeds():
    return {
        "defaults": cli(8, 8),
        "mra2_blocks_per_row": cli(8, 8, "--scales", "32,1", "--blocks-per-row", "4"),
        "mra3_budgets": cli(8, 8, "--scales", "16,4,1", "--budget", "3,5"),
        "mra4": cli(8, 8, "--scales", "32,8,2,1", "--budget", "2,4,8"),
        "sparse_priors": cli(7, 6, "--scales", "8,1", "--mode", "sparse", "--prior-first", "1", "--prior-diagonal", "3"),
        "cross_attention": cli(4, 8, "--scales", "4,1", "--budget", "5"),
        "single_token": cli(0, 0, "--scales", "2,1", "--budget", "1"),
        "attend_files": cli(8, 8, "--q", "q.npy", "--k", "k.npy", "--v", "v.npy", "--mask", "m.npy", "-o", "out.npy"),
        "compare_tolerances": cli(8, 8, "a.npy", "b.npy", "--atol", "1e-3", "--rtol", "1e-2"),
        "scale": cli(8, 8, "--scale", "0.125"),
        "help": cli(8, 8, "--help"),
        "long_sequence": cli(13, 13, "--scales", "32,1", "--blocks-per-row", "4"),
        "bad_budget_too_large": cli(8, 8, "--scales", "32,1", "--budget", "5"),
        "bad_budget_count": cli(8, 8, "--scales", "16,4,1", "--budget", "3"),
        "bad_budget_and_per_row": cli(8, 8, "--budget", "1", "--blocks-per-row", "1"),
        "bad_scales_not_dividing": cli(8, 8, "--scales", "32,3,1"),
        "bad_scales_not_ending_at_1": cli(8, 8, "--scales", "32,2"),
        "bad_scales_increasing": cli(8, 8, "--scales", "1,32"),
        "bad_scales_zero": cli(8, 8, "--scales", "0,1"),
        "bad_scales_single": cli(8, 8, "--scales", "1"),
        "bad_scales_empty_entry": cli(8, 8, "--scales", "32,,1"),
        "bad_scales_out_of_range": cli(8, 8, "--scales", "99999999999999999999,1"),
        "bad_negative_budget": cli(8, 8, "--budget", "-1"),
        "bad_mode": cli(8, 8, "--mode", "dense"),
        "bad_scale_nan": cli(8, 8, "--scale", "nan"),
        "bad_scale_text": cli(8, 8, "--scale", "0.1x"),
        "bad_unknown_option": cli(8, 8, "--bogus", "1"),
        "bad_missing_value": cli(8, 8, "--scales"),
        "bad_repeated_option": cli(8, 8, "--mode", "full", "--mode", "sparse"),
        # Inputs of bugs the fuzzer found, kept so that they stay fixed.
        "regress_blocks_per_row_overflow": cli(8, 8, "--blocks-per-row", "9223372036854775807"),
        "regress_scale_side_overflow": cli(8, 8, "--scales", "9223372036854775807,1"),
        "regress_scale_side_overflow_budget": cli(8, 8, "--scales", "9223372036854775807,1", "--budget", "1"),
        "regress_block_count_overflow": cli(15, 15, "--scales", "64,8,1", "--blocks-per-row", "1000000"),
        "regress_block_count_overflow_budget": cli(15, 15, "--scales", "4,1", "--budget", "4"),
        "regress_newline_in_value": cli(8, 8, "--mode", "a\nb"),
        "regress_newline_in_option": cli(8, 8, "--x\ny", "1"),
        # Issue 13's hostile command lines: huge sides at three levels, --name=value, an option as a value.
        "regress_huge_side_three_levels": cli(8, 8, "--scales", "576460752303423488,2,1", "--blocks-per-row", "1000"),
        "regress_largest_side_three_levels": cli(8, 8, "--scales", "1048576,2,1", "--blocks-per-row", "1000"),
        "regress_budget_above_blocks": cli(8, 8, "--scales", "16,4,1", "--budget", "9223372036854775807,5"),
        "equals_form": cli(8, 8, "--scales=32,1", "--mode=sparse", "--scale=1"),
        "option_as_value": cli(8, 8, "-o", "--q", "q.npy"),
        "key_and_query_masks": cli(4, 8, "--key-mask", "k.npy", "--query-mask", "q.npy"),
    }


def write(folder, seeds, suffix):
    path = os.path.join(HERE, "corpus", folder)
    os.makedirs(path, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(path, name + suffix), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write("npy", npy_seeds(), ".npy")
    write("cli", cli_seeds(), ".args")
