#!/usr/bin/env python3
"""Writes the committed seed corpora of tests/fuzz/corpus/{control,descriptor,config} and of the same-host messages.

Run once after a wire or format change: python3 tests/fuzz/make-seeds.py. The seeds are small
valid and invalid inputs; fuzz-smoke copies them to a temporary folder and never grows them.
"""
import os
import struct

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
MAGIC, VERSION = 0x3157434D, 1
GET_DESC, PING, WRITE, READ, CONTROL, WATCH = 1, 3, 5, 7, 10, 17
BUF = 0x10000000  # fuzz_control registers 2 x 64 KiB here
BUFLEN = 64 << 10


def hdr(t, id=1, addr=0, length=0, status=0, magic=MAGIC, version=VERSION):
    return struct.pack("<IHHQQQiI", magic, version, t, id, addr, length, status, 0)


def put(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(root, target, name), "wb") as f:
        f.write(data)


# ---- control: bytes a client sends on one connection
put("control", "ping", hdr(PING))
put("control", "get_desc", hdr(GET_DESC, 2))
put("control", "write_then_read", hdr(WRITE, 3, BUF, 64) + bytes(range(64)) + hdr(READ, 4, BUF, 64))
put("control", "read_span", hdr(READ, 5, BUF + BUFLEN - 32, 64))
put("control", "write_span", hdr(WRITE, 6, BUF + BUFLEN - 8, 16) + b"x" * 16)
put("control", "read_large", hdr(READ, 7, BUF, 2 * BUFLEN))
put("control", "write_refused_drained", hdr(WRITE, 8, 0x1000, 16) + b"y" * 16 + hdr(PING, 9))
put("control", "write_refused_big", hdr(WRITE, 10, 0x1000, 2 << 20))
put("control", "read_refused", hdr(READ, 11, BUF + 2 * BUFLEN, 8) + hdr(READ, 12, BUF, 0))
put("control", "write_truncated", hdr(WRITE, 13, BUF, 4096) + b"z" * 100)
put("control", "bad_magic", "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
put("control", "bad_version", hdr(PING, version=2))
put("control", "unknown_type", hdr(99))
put("control", "ping_with_payload", hdr(PING, length=4) + b"abcd")
put("control", "control_rdma", hdr(CONTROL, 14, 0, 10) + b"rdma\0hello")
put("control", "control_no_channel", hdr(CONTROL, 15, 0, 5) + b"hello")
put("control", "control_too_big", hdr(CONTROL, 16, 0, (64 << 20) + 1))
put("control", "half_header", hdr(PING)[:20])
put("control", "watch", hdr(WATCH, 17, 10))
put("control", "watch_then_ping", hdr(WATCH, 18, 1) + hdr(PING, 19))
put("control", "ping_then_watch", hdr(PING, 20) + hdr(WATCH, 21, 1 << 40))
put("control", "watch_with_payload", hdr(WATCH, 22, 10, 4) + b"abcd")
put("control", "pipeline", b"".join(hdr(PING, i) + hdr(READ, 100 + i, BUF + i * 512, 512) for i in range(16)))

# ---- descriptor: JSON text
good = ('{"major":1,"minor":0,"name":"127.0.0.1:15000","incarnation":"9f3c00aa11bb22cc",'
        '"version":7,"host_id":"b00t","pid":1234,"tcp":"127.0.0.1:15000",'
        '"buffers":[{"addr":4096,"length":4096,"location":"cpu"},'
        '{"addr":8192,"length":100,"location":"cpu:1"}]}')
put("descriptor", "good", good)
put("descriptor", "ext_and_transports",
    '{"major":1,"minor":3,"name":"n","incarnation":"1","version":0,"buffers":[{"addr":1,"length":1,'
    '"ext":{"rdma":{"rkey":[1,2],"lkey":null}}}],"transports":{"shm":{"path":"/x"},"rdma":[1]}}')
put("descriptor", "empty_buffers", '{"major":1,"name":"","incarnation":"0","version":1,"buffers":[]}')
put("descriptor", "major2", good.replace('"major":1', '"major":2'))
put("descriptor", "overlap",
    '{"major":1,"name":"a","incarnation":"ff","version":1,"buffers":[{"addr":0,"length":10},{"addr":5,"length":10}]}')
put("descriptor", "wrap",
    '{"major":1,"name":"a","incarnation":"ff","version":1,"buffers":[{"addr":18446744073709551615,"length":2}]}')
put("descriptor", "bad_incarnation", good.replace("9f3c00aa11bb22cc", "9f3c00aa11bb22cc0"))
put("descriptor", "float_fields", good.replace('"pid":1234', '"pid":1e300').replace('"version":7', '"version":-1.5'))
put("descriptor", "wrong_types", '{"major":"1","name":5,"incarnation":[],"version":{},"buffers":"x"}')
put("descriptor", "not_object", "[1,2,3]")
put("descriptor", "truncated", good[:60])
put("descriptor", "unicode", '{"major":1,"name":"\\u00e9\\ud83d\\ude00","incarnation":"a","version":1,"buffers":[]}')

# ---- config: (key, value) strings in FuzzedDataProvider form, each ended by "\\\n"
def cfg(*pairs):
    return "".join(k + "\\\n" + v + "\\\n" for k, v in pairs)

put("config", "all_keys", cfg(("name", "node-1"), ("metadata", "p2p"), ("listen", "127.0.0.1:0"),
                              ("transports", "tcp,local"), ("workers", "4"), ("slice_size", "1M"),
                              ("tcp_connections", "4"), ("timeout_ms", "5000"), ("log_level", "debug")))
put("config", "sizes", cfg(("slice_size", "4K"), ("slice_size", "1g"), ("slice_size", "4095"),
                           ("slice_size", "18446744073709551615"), ("slice_size", "K")))
put("config", "ints", cfg(("workers", "0"), ("workers", "257"), ("workers", "-1"),
                          ("timeout_ms", "3600001"), ("workers", "9999999999999999999")))
put("config", "bad_keys", cfg(("", "x"), ("Workers", "4"), ("unknown", "1"), ("name", "has space")))
put("config", "listen", cfg(("listen", "localhost:65535"), ("listen", "1.2.3.4:65536"),
                            ("listen", "::1:80"), ("listen", ":80")))
put("config", "transports", cfg(("transports", "auto"), ("transports", ""), ("transports", "tcp,,local"),
                                ("transports", "shm"), ("log_level", "3")))

# ---- same-host messages (src/proto/samehost_msg.h): what a same-host peer or the metadata store sends
for d in ("shm_list", "shm_hello", "nvlink_list", "nvlink_hello", "samehost_blob"):
    os.makedirs(os.path.join(root, d), exist_ok=True)


def sbuf(addr, length, memfd=True, access=3):
    return '{"addr":%d,"len":%d,"memfd":%s,"access":%d}' % (addr, length, "true" if memfd else "false", access)


def slist(*bufs, epoch=3):
    return '{"epoch":%s,"buffers":[%s]}' % (epoch, ",".join(bufs))


put("shm_list", "ok_two", slist(sbuf(4096, 4096), sbuf(8192, 16, False, 1)))
put("shm_list", "ok_empty", slist())
put("shm_list", "positional", slist("[4096,4096,true,3]"))
put("shm_list", "string_addr", slist('{"addr":"4096","len":1,"memfd":true,"access":3}'))
put("shm_list", "wraps", slist(sbuf(2**64 - 1, 2)))
put("shm_list", "zero_len", slist(sbuf(4096, 0)))
put("shm_list", "overlap", slist(sbuf(4096, 4096), sbuf(8000, 1)))
put("shm_list", "float_epoch", slist(sbuf(4096, 1), epoch="1.5"))
put("shm_list", "truncated", slist(sbuf(4096, 4096))[:30])

put("shm_hello", "ok", '{"pid":4242,"ctrl":140737488351232}')
put("shm_hello", "pid_string", '{"pid":"4242","ctrl":1}')
put("shm_hello", "pid_minus_one", '{"pid":-1,"ctrl":1}')
put("shm_hello", "pid_zero", '{"pid":0,"ctrl":1}')
put("shm_hello", "no_ctrl", '{"pid":7}')
put("shm_hello", "not_object", '[7,1]')

ipc = "5a" * 64


def nbuf(addr, length, extra, vmm=False, access=3, dev=0):
    return '{"addr":%d,"len":%d,"dev":%d,"vmm":%s,"access":%d%s}' % (
        addr, length, dev, "true" if vmm else "false", access, extra)


put("nvlink_list", "ok_ipc", slist(nbuf(65536, 4096, ',"ipc":"%s","base":32768' % ipc)))
put("nvlink_list", "ok_vmm", slist(nbuf(131072, 8192, ',"chunks":[[131072,4096],[135168,4096]]', vmm=True)))
put("nvlink_list", "ok_closed", slist(nbuf(196608, 1, "", access=0)))
put("nvlink_list", "bad_hex", slist(nbuf(65536, 4096, ',"ipc":"zz","base":0')))
put("nvlink_list", "base_above", slist(nbuf(65536, 4096, ',"ipc":"%s","base":99999' % ipc)))
put("nvlink_list", "chunk_wraps", slist(nbuf(1, 1, ',"chunks":[[18446744073709551615,2]]', vmm=True)))
put("nvlink_list", "no_chunks", slist(nbuf(1, 1, ',"chunks":[]', vmm=True)))
put("nvlink_list", "dev_negative", slist(nbuf(1, 1, "", access=0, dev=-1)))

put("nvlink_hello", "ok", '{"pid":17}')
put("nvlink_hello", "pid_array", '{"pid":[17]}')
put("nvlink_hello", "pid_negative", '{"pid":-1}')
put("nvlink_hello", "empty", '{}')

put("samehost_blob", "shm_ok", b"\x00" + b'{"socket":"mc-shm-1-2"}')
put("samehost_blob", "shm_array", b"\x00" + b'{"socket":[1]}')
put("samehost_blob", "nvlink_ok", b"\x01" + b'{"socket":"mc-nv-1-2"}')
put("samehost_blob", "nvlink_nul", b"\x01" + b'{"socket":"a\\u0000b"}')
put("samehost_blob", "fd_ok", b"\x02FD 140737488351232")
put("samehost_blob", "fd_negative", b"\x02FD -1")
put("samehost_blob", "fd_overflow", b"\x02FD 18446744073709551616")
