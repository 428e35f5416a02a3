#!/usr/bin/env python3
"""Writes the binary seed inputs of the cache fuzz targets (tests/fuzz/seeds/{pipeline_cache,
weight_cache}): valid files for the identity the targets use, and near misses. The layouts are
runtime/pipeline_cache_file.cpp's and graph/weight_cache.cpp's. Usage: tools/make_fuzz_seeds.py"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fuzz", "seeds")
VENDOR, DEVICE = 0x10DE, 0x2330
UUID = bytes(0xA0 + i for i in range(16))


def fnv1a64(data):
    h = 14695981039346656037
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def pipeline_file(data, vendor=VENDOR, device=DEVICE, uuid=UUID):
    magic = b"q3n-pipelines-1\0"
    return magic + struct.pack("<QQII", len(data), fnv1a64(data), vendor, device) + uuid + data


def driver_data(payload, vendor=VENDOR, device=DEVICE, uuid=UUID, version=1):
    return struct.pack("<IIII", 32, version, vendor, device) + uuid + payload


def write(target, name, data):
    folder = os.path.join(ROOT, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


write("pipeline_cache", "valid", pipeline_file(driver_data(bytes(range(64)))))
write("pipeline_cache", "valid_header_only", pipeline_file(driver_data(b"")))
write("pipeline_cache", "other_device", pipeline_file(driver_data(b"x" * 16, device=0x1234), device=0x1234))
write("pipeline_cache", "driver_version_2", pipeline_file(driver_data(b"y" * 8, version=2)))
write("pipeline_cache", "raw_driver_data", driver_data(b"z" * 40))  # what q3n wrote before its header

key, payload = 0x0123456789ABCDEF, 4096
header = b"q3n-weights-v1\0\0" + struct.pack("<QQ", key, payload)
write("weight_cache", "valid", struct.pack("<QQQ", 32 + payload, key, payload) + header)
write("weight_cache", "truncated", struct.pack("<QQQ", 32 + payload - 1, key, payload) + header)
write("weight_cache", "other_key", struct.pack("<QQQ", 32 + payload, key + 1, payload) + header)
write("weight_cache", "short_header", struct.pack("<QQQ", 32 + payload, key, payload) + header[:20])
