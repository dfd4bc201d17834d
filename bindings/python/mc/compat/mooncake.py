"""Mooncake's Python TransferEngine (mooncake.engine.TransferEngine) on mc: code written for
Mooncake runs on mc by changing one import,

    from mc.compat.mooncake import TransferEngine   # was: from mooncake.engine import ...

Method names, arguments and return conventions are Mooncake's: 0 for success, a negative code for
failure (-7 ERR_ADDRESS_OVERLAPPED for memory registered already, -3 ERR_ADDRESS_NOT_REGISTERED
for unregistering unknown memory, -1 otherwise); a batch id, 0 when the submit failed; an
address, 0 when the allocation failed. Nothing raises for an mc failure; its message goes to the
"mc.compat.mooncake" logger. Where Mooncake 0.3.13 is lenient this shim is not: a second
initialize, or batch_register_memory with lists of different lengths, return -1 (Mooncake
re-initializes, and registers the shorter list's pairs); a transfer from local memory that is not
registered returns -1 (mc moves bytes only between registered buffers; Mooncake's tcp transport
sends it); batch_unregister_memory is all or nothing (Mooncake unregisters up to the unknown
address). Covered:
initialize (P2PHANDSHAKE, etcd or redis metadata), get_rpc_port, register_memory /
unregister_memory and their batch forms, transfer_sync(_write/_read), batch_transfer_sync(_write/
_read), batch_transfer_async(_write/_read) with get_batch_transfer_status,
transfer_submit_write with transfer_check_status, allocate_managed_buffer / free_managed_buffer,
get_first_buffer_address and write/read_bytes_to/from_buffer. Not covered: notifications, the
http metadata server, transport hints (mc picks the transport for each pair of buffers;
`protocol` must be "tcp" or "rdma"), topology queries."""

import ctypes
import enum
import itertools
import logging
import mmap
import socket
import threading

import mc

_log = logging.getLogger("mc.compat.mooncake")
# Mooncake's codes (its error.h) for the failures mc can tell apart; the rest are -1.
OK, FAILED = 0, -1
ERR_INVALID_ARGUMENT, ERR_ADDRESS_NOT_REGISTERED, ERR_ADDRESS_OVERLAPPED = -1, -3, -7
_CODES = {mc.NotFound: ERR_ADDRESS_NOT_REGISTERED, mc.Exists: ERR_ADDRESS_OVERLAPPED,
          mc.InvalidArg: ERR_INVALID_ARGUMENT}


class TransferOpcode(enum.IntEnum):
    Read = 0
    Write = 1


def _metadata(server):
    """Mooncake's metadata_server string to mc's metadata key ("p2p", "etcd://..", "redis://..").
    A bare HOST:PORT is etcd, as in Mooncake."""
    if server == "P2PHANDSHAKE":
        return "p2p"
    if server.startswith(("etcd://", "redis://")):
        return server
    if "://" in server:
        raise ValueError(f"metadata server {server!r}: mc supports P2PHANDSHAKE, etcd and redis")
    return "etcd://" + server


def _host_port(hostname):
    host, sep, port = hostname.rpartition(":")
    if sep and port.isdigit() and host and not host.endswith(":"):
        return host.strip("[]"), int(port)
    return hostname, 0


def _free_port(host):
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _failed(what, e, codes=False):
    """Logs e and returns -1, or with codes (the memory calls) Mooncake's code for it."""
    _log.error("%s: %s", what, e)
    return _CODES.get(type(e), FAILED) if codes else FAILED


class TransferEngine:
    """mooncake.engine.TransferEngine over one mc.Engine (see the module doc)."""

    TransferOpcode = TransferOpcode

    def __init__(self):
        self._engine = None
        self._rpc_port = 0
        self._lock = threading.Lock()  # guards _segments, _batches, _managed
        self._segments = {}  # target_hostname -> mc.Segment, opened once
        self._batches = {}  # batch id -> mc.Batch
        self._ids = itertools.count(1)
        self._managed = {}  # address -> mmap of allocate_managed_buffer

    def initialize(self, local_hostname, metadata_server, protocol, device_name):
        """Starts the engine: P2PHANDSHAKE (its segment is then "HOST:RPC_PORT"), an etcd
        ("etcd://HOST:PORT" or "HOST:PORT") or a redis ("redis://HOST:PORT") server (its segment
        is then local_hostname). 0, or -1."""
        return self.initialize_ext(local_hostname, metadata_server, protocol, device_name, "")

    def initialize_ext(self, local_hostname, metadata_server, protocol, device_name,
                       nic_priority_matrix):
        if self._engine is not None:
            return _failed("initialize", "the engine is already initialized")
        if protocol not in ("tcp", "rdma"):
            return _failed("initialize", f"protocol {protocol!r}: mc supports tcp and rdma")
        try:
            host, port = _host_port(local_hostname)
            config = {"metadata": _metadata(metadata_server)}
            if config["metadata"] != "p2p":
                config["name"] = local_hostname
                port = port or _free_port(host)  # the name does not say it: choose it here
            config["listen"] = f"{host}:{port}"
            self._engine = mc.Engine(**config)
        except (mc.Error, ValueError, OSError) as e:
            return _failed("initialize", e)
        self._rpc_port = port or _host_port(self._engine.name)[1]
        return OK

    def get_rpc_port(self):
        """The port peers reach this engine on (its segment is "HOST:PORT" in P2PHANDSHAKE)."""
        return self._rpc_port

    def get_engine(self):
        return self._engine

    # -- memory

    def register_memory(self, buffer_addr, capacity, location="*"):
        return self.batch_register_memory([buffer_addr], [capacity], location)

    def unregister_memory(self, buffer_addr):
        return self.batch_unregister_memory([buffer_addr])

    def batch_register_memory(self, buffer_addresses, capacities, location="*"):
        if len(buffer_addresses) != len(capacities):
            return _failed("batch_register_memory", mc.InvalidArg(
                -1, "addresses and capacities differ in length"), codes=True)
        try:
            self._engine.register_batch(list(zip(buffer_addresses, capacities)),
                                        None if location in ("*", "") else location)
        except (mc.Error, TypeError) as e:
            return _failed("register_memory", e, codes=True)
        return OK

    def batch_unregister_memory(self, buffer_addresses):
        try:
            self._engine.unregister_batch(list(buffer_addresses))
        except mc.Error as e:
            return _failed("unregister_memory", e, codes=True)
        return OK

    def allocate_managed_buffer(self, length):
        """Page-aligned memory of length bytes, registered: its address, or 0."""
        try:
            m = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            addr = self._engine.register(m)
        except (mc.Error, ValueError, OSError) as e:
            _failed("allocate_managed_buffer", e)
            return 0
        with self._lock:
            self._managed[addr] = m
        return addr

    def free_managed_buffer(self, buffer_addr, length):
        with self._lock:
            m = self._managed.get(buffer_addr)
        if m is None or len(m) != length:
            # Mooncake returns 0 here too: a free of what it did not allocate is ignored
            _log.warning("free_managed_buffer: 0x%x (+%d) was not allocated by "
                         "allocate_managed_buffer; ignored", buffer_addr, length)
            return OK
        try:
            self._engine.unregister(m)
        except mc.Error as e:
            return _failed("free_managed_buffer", e)
        with self._lock:
            del self._managed[buffer_addr]
        m.close()
        return OK

    def write_bytes_to_buffer(self, dest_address, src, length):
        """Copies length bytes of src (bytes or str) to local memory at dest_address. 0, or -1."""
        data = src.encode() if isinstance(src, str) else bytes(src)
        if length > len(data):
            return _failed("write_bytes_to_buffer", f"{length} bytes asked, {len(data)} given")
        ctypes.memmove(dest_address, data, length)
        return OK

    def read_bytes_from_buffer(self, source_address, length):
        return ctypes.string_at(source_address, length)

    # -- transfers

    def _segment(self, target_hostname):
        with self._lock:
            seg = self._segments.get(target_hostname)
        if seg is None:
            seg = self._engine.open(target_hostname)
            with self._lock:
                seg = self._segments.setdefault(target_hostname, seg)
        return seg

    def get_first_buffer_address(self, segment_name):
        try:
            buffers = self._segment(segment_name).buffers
        except mc.Error as e:
            _failed("get_first_buffer_address", e)
            return 0
        return min(b.addr for b in buffers) if buffers else 0

    def _requests(self, target, buffers, peers, lengths, opcode):
        if not len(buffers) == len(peers) == len(lengths):
            raise mc.InvalidArg(-1, "buffers, peer addresses and lengths differ in length")
        seg = self._segment(target)
        op = mc.WRITE if TransferOpcode(opcode) == TransferOpcode.Write else mc.READ
        return [mc.Request(op, b, seg, p, n) for b, p, n in zip(buffers, peers, lengths)]

    def batch_transfer_sync(self, target_hostname, buffers, peer_buffer_addresses, lengths,
                            opcode, notify=None, transport_hint=""):
        if notify is not None:
            return _failed("batch_transfer_sync", "notifications are not supported by mc")
        try:
            self._engine.transfer(self._requests(target_hostname, buffers,
                                                 peer_buffer_addresses, lengths, opcode))
        except mc.Error as e:
            return _failed(f"transfer to {target_hostname}", e)
        return OK

    def batch_transfer_sync_write(self, target_hostname, buffers, peer_buffer_addresses, lengths,
                                  transport_hint=""):
        return self.batch_transfer_sync(target_hostname, buffers, peer_buffer_addresses, lengths,
                                        TransferOpcode.Write)

    def batch_transfer_sync_read(self, target_hostname, buffers, peer_buffer_addresses, lengths,
                                 transport_hint=""):
        return self.batch_transfer_sync(target_hostname, buffers, peer_buffer_addresses, lengths,
                                        TransferOpcode.Read)

    def transfer_sync(self, target_hostname, buffer, peer_buffer_address, length, opcode,
                      notify=None, transport_hint=""):
        return self.batch_transfer_sync(target_hostname, [buffer], [peer_buffer_address],
                                        [length], opcode, notify)

    def transfer_sync_write(self, target_hostname, buffer, peer_buffer_address, length,
                            transport_hint=""):
        return self.transfer_sync(target_hostname, buffer, peer_buffer_address, length,
                                  TransferOpcode.Write)

    def transfer_sync_read(self, target_hostname, buffer, peer_buffer_address, length,
                           transport_hint=""):
        return self.transfer_sync(target_hostname, buffer, peer_buffer_address, length,
                                  TransferOpcode.Read)

    def batch_transfer_async(self, target_hostname, buffers, peer_buffer_addresses, lengths,
                             opcode, transport_hint=""):
        """Submits the requests and returns a batch id for get_batch_transfer_status, or 0."""
        batch = None
        try:
            reqs = self._requests(target_hostname, buffers, peer_buffer_addresses, lengths,
                                  opcode)
            batch = self._engine.batch(max(len(reqs), 1))
            batch.submit(reqs)
        except mc.Error as e:
            if batch is not None:
                batch.close()
            _failed(f"transfer to {target_hostname}", e)
            return 0
        with self._lock:
            batch_id = next(self._ids)
            self._batches[batch_id] = batch
        return batch_id

    def batch_transfer_async_write(self, target_hostname, buffers, peer_buffer_addresses,
                                   lengths, transport_hint=""):
        return self.batch_transfer_async(target_hostname, buffers, peer_buffer_addresses,
                                         lengths, TransferOpcode.Write)

    def batch_transfer_async_read(self, target_hostname, buffers, peer_buffer_addresses,
                                  lengths, transport_hint=""):
        return self.batch_transfer_async(target_hostname, buffers, peer_buffer_addresses,
                                         lengths, TransferOpcode.Read)

    def transfer_submit_write(self, target_hostname, buffer, peer_buffer_address, length,
                              transport_hint=""):
        """Submits one WRITE: a batch id for transfer_check_status, or 0."""
        return self.batch_transfer_async(target_hostname, [buffer], [peer_buffer_address],
                                         [length], TransferOpcode.Write)

    def transfer_check_status(self, batch_id):
        """Polls a transfer_submit_write: 1 when it completed, 0 while it runs, -1 when it failed
        (or the id is unknown); the batch is freed once it ended."""
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None:
            return _failed("transfer_check_status", f"unknown batch id {batch_id}")
        try:
            state = batch.status(0).state
        except mc.Error as e:
            state = mc.RequestState.FAILED
            _failed(f"batch {batch_id}", e)
        if state == mc.RequestState.PENDING:
            return 0
        with self._lock:
            self._batches.pop(batch_id, None)
        batch.close()
        return 1 if state == mc.RequestState.COMPLETED else FAILED

    def get_batch_transfer_status(self, batch_ids):
        """Waits for every batch of batch_ids and frees them: 0 when all their requests
        completed, -1 when one failed or an id is unknown."""
        with self._lock:
            batches = [self._batches.pop(i, None) for i in batch_ids]
        result = OK
        for batch_id, batch in zip(batch_ids, batches):
            if batch is None:
                result = _failed("get_batch_transfer_status", f"unknown batch id {batch_id}")
                continue
            try:
                batch.wait()
            except mc.Error as e:
                result = _failed(f"batch {batch_id}", e)
            finally:
                batch.close()
        return result
