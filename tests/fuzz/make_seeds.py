#!/usr/bin/env python3
# tests/fuzz/make_seeds.py: writes the seed corpora of the fuzz targets, corpus/{npy,npz,safetensors,cli}/
# (checked in; rerun after changing this file):   python3 tests/fuzz/make_seeds.py
# Seeds are valid inputs and near misses (one field wrong), so that the fuzzer starts next to every branch of
# the reader and the option parser instead of having to discover the format. Standard library only.
import io
import json
import os
import struct
import warnings
import zipfile
import zlib

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


def zip_archive(members, compression=zipfile.ZIP_STORED, force_zip64=True):
    """An archive as np.savez (stored) or np.savez_compressed (deflated) writes it: Python's zipfile, each member
    written through open(..., force_zip64=True)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as z:
        for name, data in members:
            with z.open(name, "w", force_zip64=force_zip64) as f:
                f.write(data)
    return buffer.getvalue()


def zip64_directory(data, name=b"q.npy"):
    """One stored member whose central directory entry saturates sizes and offset into a zip64 extra field,
    with zip64 end records: the layout of archives beyond 4 GiB, at seed size."""
    crc = zlib.crc32(data)
    local = struct.pack("<IHHHHHIIIHH", 0x04034b50, 45, 0, 0, 0, 0x21, crc, len(data), len(data), len(name), 0)
    extra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), 0)
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 45, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                          len(name), len(extra), 0, 0, 0, 0, 0xFFFFFFFF) + name + extra
    body = local + name + data
    end64 = struct.pack("<IQHHIIQQQQ", 0x06064b50, 44, 45, 45, 0, 0, 1, 1, len(central), len(body))
    locator = struct.pack("<IIQI", 0x07064b50, 0, len(body) + len(central), 1)
    end = struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body + central + end64 + locator + end


def raw_deflate(data, strategy=zlib.Z_DEFAULT_STRATEGY, level=9):
    c = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
    return c.compress(data) + c.flush()


def npz_seeds():
    q = npy(dict_text("<f4", "(2, 3)"), floats("<f", [1.5, -2.0, 0.25, 3.0, 4.0, -0.5]))
    m = npy(dict_text("|b1", "(4,)"), bytes([1, 1, 0, 1]))
    stored = zip_archive([("q.npy", q), ("mask.npy", m)])
    deflated = zip_archive([("q.npy", q), ("k.npy", q)], zipfile.ZIP_DEFLATED)
    text = bytes(97 + ((i * 2654435761) >> 7) % 23 for i in range(600))
    at = stored.index(b"\x93NUMPY") + 70
    return {
        "valid_savez": stored,
        "valid_savez_compressed": deflated,
        "valid_plain_zipfile": zip_archive([("v.npy", q)], force_zip64=False),
        "valid_zip64_directory": zip64_directory(q),
        "valid_other_member": zip_archive([("notes.txt", b"hello"), ("q.npy", q)]),
        "valid_empty_archive": zip_archive([]),
        # Raw DEFLATE streams for the decoder on its own (fuzz_npz runs it on every input).
        "valid_deflate_fixed": raw_deflate(b"abc" * 40, zlib.Z_FIXED),
        "valid_deflate_dynamic": raw_deflate(text),
        "valid_deflate_stored": raw_deflate(b"stored!", level=0),
        "bad_crc": stored[:at] + bytes([stored[at] ^ 1]) + stored[at + 1:],
        "bad_member_npy": zip_archive([("q.npy", q[:-3])]),
        "bad_method_bzip2": zip_archive([("q.npy", q)], zipfile.ZIP_BZIP2),
        "truncated_archive": stored[: len(stored) // 2],
        "truncated_end_record": stored[:-5],
        "duplicate_member": duplicate_member(q),
        "deflate_distance_too_far": bytes([0x03, 0x02, 0x00]),
        "deflate_reserved_block": bytes([0x07]),
        "empty": b"",
        # Inputs of bugs the fuzzer found, kept so that they stay fixed.
        "regress_control_character_in_name": zip_archive([("a\nb.npy", q[:-3])]),
    }


def duplicate_member(data):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name this seed is for
        z.writestr(zipfile.ZipInfo("q.npy"), data)  # a ZipInfo keeps the 1980 timestamp: seeds stay identical
        z.writestr(zipfile.ZipInfo("q.npy"), data)
    return buffer.getvalue()


def safetensors(header, data, metadata=None, pad=True):
    """A safetensors file: `header` is a dict of tensors (JSON-encoded here, after the metadata) or raw bytes."""
    if isinstance(header, dict):
        text = json.dumps({"__metadata__": metadata, **header} if metadata is not None else header).encode()
    else:
        text = header
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def tensor(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def safetensors_seeds():
    six = floats("<f", [1.5, -2.0, 0.25, 3.0, 4.0, -0.5])
    every = six + struct.pack("<2H", 0x3C00, 0x7E00) + struct.pack("<2H", 0x3FC0, 0xFF80) + floats("<d", [0.1, -7]) + \
        bytes([1, 0]) + struct.pack("<2q", -5, 2**40) + struct.pack("<2i", 3, -3) + bytes([200, 7])
    every_header = {"q": tensor("F32", [2, 3], 0, 24), "h": tensor("F16", [2], 24, 28), "b": tensor("BF16", [2], 28, 32),
                    "d": tensor("F64", [1, 2], 32, 48), "m": tensor("BOOL", [2], 48, 50), "i": tensor("I64", [2], 50, 66),
                    "j": tensor("I32", [2], 66, 74), "u": tensor("U8", [2], 74, 76)}
    q = {"q": tensor("F32", [2, 3], 0, 24)}
    return {
        "valid_every_dtype": safetensors(every_header, every, {"format": "pt"}),
        "valid_one_f32": safetensors(q, six),
        "valid_unpadded": safetensors(q, six, pad=False),
        "valid_scalar": safetensors({"s": tensor("F32", [], 0, 4)}, six[:4]),
        "valid_empty_tensor": safetensors({"e": tensor("F32", [0, 3], 0, 0)}, b""),
        "valid_escaped_names": safetensors(b'{"q\u00e9\ud83d\ude00\n\"": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}}', six),
        "valid_no_tensors": safetensors({}, b"", {"a": "b"}),
        "bad_offsets_past_end": safetensors({"q": tensor("F32", [2, 3], 0, 28)}, six),
        "bad_offsets_reversed": safetensors({"q": tensor("F32", [2, 3], 24, 0)}, six),
        "bad_size_mismatch": safetensors({"q": tensor("F32", [2, 2], 0, 24)}, six),
        "bad_dtype": safetensors({"q": tensor("F8_E4M3", [6], 0, 6)}, six),
        "bad_overflow_shape": safetensors({"q": tensor("F32", [2**32, 2**32], 0, 24)}, six),
        "bad_huge_dimension": safetensors(b'{"q": {"dtype": "F32", "shape": [99999999999999999999], "data_offsets": [0, 24]}}', six),
        "bad_negative": safetensors(b'{"q": {"dtype": "F32", "shape": [-6], "data_offsets": [0, 24]}}', six),
        "bad_missing_key": safetensors({"q": {"dtype": "F32", "shape": [6]}}, six),
        "bad_unknown_key": safetensors({"q": {**tensor("F32", [6], 0, 24), "x": 1}}, six),
        "bad_duplicate": safetensors(b'{"q": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}, "q": {}}', six),
        "bad_unpaired_surrogate": safetensors(b'{"q\ud800": {}}', six),
        "bad_metadata_value": safetensors(b'{"__metadata__": {"k": [1]}}', b""),
        "bad_header_length": struct.pack("<Q", 2**63) + b"{}",
        "bad_not_object": safetensors(b"[1, 2]", b""),
        "truncated": safetensors(q, six)[:20],
        "regress_control_character_in_name": safetensors({"q\nd8": tensor("U64", [6], 0, 24)}, six),
        "empty": b"",
    }


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
    write("npz", npz_seeds(), ".npz")
    write("safetensors", safetensors_seeds(), ".safetensors")
    write("cli", cli_seeds(), ".args")
