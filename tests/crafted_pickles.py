"""Checkpoints written opcode by opcode, as an attacker would: a small pickle assembler, torch's
two file formats around a pickle, and a seeded generator of random checkpoints.

The generator composes the globals the checkpoint loader allows (numpy arrays, dtypes and
scalars, HistoryBuffer, torch's own tensors and containers), their near misses (numpy's real
constructors, dtype classes, code-running builtins) and the opcodes that combine them (REDUCE,
NEWOBJ, BUILD, the memo, nested containers, persistent storages) into whole files.
"""
import io
import pickle
import random
import struct
import zipfile
from functools import partial

# torch.serialization's legacy format: three small pickles, the data, the storage keys, the
# storages (an 8-byte element count, then the bytes, each)
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch's storage types in persistent ids, with their element sizes
STORAGE_TYPES = {'FloatStorage': 4, 'DoubleStorage': 8, 'LongStorage': 8, 'IntStorage': 4,
                 'ByteStorage': 1, 'BoolStorage': 1, 'HalfStorage': 2, 'BFloat16Storage': 2,
                 'ComplexFloatStorage': 8}


class Expr:
    """A node of a pickle program: ``kind`` and its parts, emitted by :class:`PickleWriter`."""

    __slots__ = ('kind', 'parts')

    def __init__(self, kind, *parts):
        self.kind = kind
        self.parts = parts


def G(module, name):  # noqa: N802  reads as the GLOBAL opcode
    return Expr('global', module, name)


def call(func, *args):
    """``func(*args)`` through REDUCE."""
    return Expr('reduce', func, Expr('tuple', *args))


def newobj(cls, *args):
    """``cls.__new__(cls, *args)`` through NEWOBJ."""
    return Expr('newobj', cls, Expr('tuple', *args))


def build(obj, state):
    """``obj`` given ``state`` through BUILD."""
    return Expr('build', obj, state)


def tup(*items):
    return Expr('tuple', *items)


def lst(*items):
    return Expr('list', *items)


def dct(*pairs):
    return Expr('dict', *pairs)


def encoded(data):
    """A non-empty ``bytes`` as protocol 2 writes it: ``_codecs.encode(text, 'latin1')``."""
    return call(G('_codecs', 'encode'), data.decode('latin1'), 'latin1')


def memo_get(choice=None):
    """An object memoised earlier (the ``choice``-th from the end, or a random one)."""
    return Expr('get', choice)


def remember(name, expr):
    """``expr``, memoised under ``name`` for a later :func:`recall`."""
    return Expr('remember', name, expr)


def recall(name):
    """A BINGET of the object :func:`remember` memoised under ``name``."""
    return Expr('recall', name)


def persistent(*items):
    return Expr('persid', Expr('tuple', *items))


class PickleWriter:
    """Writes an :class:`Expr` tree (and plain Python literals) as protocol 2 opcodes.

    Args:
        rng (random.Random, optional): decides which objects are memoised (BINPUT) and which
            earlier one a ``memo_get()`` without a choice returns; without it every object is
            memoised and a ``get`` takes the latest.
    """

    def __init__(self, rng=None):
        self.rng = rng
        self.out = bytearray(b'\x80\x02')
        self.memo = 0
        self.names = {}

    def dumps(self, expr):
        self.emit(expr)
        return bytes(self.out + b'.')

    def _put(self, always=False):
        if always or self.rng is None or self.rng.random() < 0.7:
            index = self.memo
            self.memo += 1
            self.out += (b'q' + bytes([index]) if index < 256 else
                         b'r' + struct.pack('<I', index))

    def _get(self, index):
        self.out += b'h' + bytes([index]) if index < 256 else b'j' + struct.pack('<I', index)

    def emit(self, value):
        out = self.out
        if isinstance(value, Expr):
            self._emit_expr(value)
            return
        if value is None:
            out += b'N'
        elif value is True or value is False:
            out += b'\x88' if value else b'\x89'
        elif isinstance(value, int):
            if 0 <= value < 256:
                out += b'K' + bytes([value])
            elif -2**31 <= value < 2**31:
                out += b'J' + struct.pack('<i', value)
            else:
                data = value.to_bytes((value.bit_length() + 8) // 8, 'little', signed=True)
                out += b'\x8a' + bytes([len(data)]) + data
        elif isinstance(value, float):
            out += b'G' + struct.pack('>d', value)
        elif isinstance(value, str):
            data = value.encode('utf-8', 'surrogatepass')
            out += b'X' + struct.pack('<I', len(data)) + data
            self._put()
        elif isinstance(value, bytes):
            self.emit(encoded(value) if value else call(G('__builtin__', 'bytes')))
        elif isinstance(value, tuple):
            self._emit_expr(Expr('tuple', *value))
        elif isinstance(value, list):
            self._emit_expr(Expr('list', *value))
        elif isinstance(value, dict):
            self._emit_expr(Expr('dict', *value.items()))
        else:
            raise TypeError(f'cannot write {type(value).__name__}')

    def _emit_expr(self, expr):
        out, parts = self.out, expr.parts
        if expr.kind == 'global':
            out += b'c' + parts[0].encode() + b'\n' + parts[1].encode() + b'\n'
        elif expr.kind == 'tuple':
            out += b'('
            for item in parts:
                self.emit(item)
            out += b't'
        elif expr.kind == 'list':
            out += b']'
            self._put()
            if parts:
                out += b'('
                for item in parts:
                    self.emit(item)
                out += b'e'
            return
        elif expr.kind == 'dict':
            out += b'}'
            self._put()
            if parts:
                out += b'('
                for key, value in parts:
                    self.emit(key)
                    self.emit(value)
                out += b'u'
            return
        elif expr.kind in ('reduce', 'newobj'):
            self.emit(parts[0])
            self.emit(parts[1])
            out += b'R' if expr.kind == 'reduce' else b'\x81'
        elif expr.kind == 'build':
            self.emit(parts[0])
            self.emit(parts[1])
            out += b'b'
        elif expr.kind == 'persid':
            self.emit(parts[0])
            out += b'Q'
        elif expr.kind == 'get':
            if self.memo == 0:
                out += b'N'
                return
            if parts[0] is not None:
                index = max(self.memo - 1 - parts[0], 0)
            elif self.rng is not None:
                index = self.rng.randrange(self.memo)
            else:
                index = self.memo - 1
            self._get(index)
            return
        elif expr.kind == 'remember':
            self.emit(parts[1])
            self._put(always=True)
            self.names[parts[0]] = self.memo - 1
            return
        elif expr.kind == 'recall':
            self._get(self.names[parts[0]])
            return
        elif expr.kind == 'raw':
            out += parts[0]
            return
        else:
            raise ValueError(expr.kind)
        self._put()


def dumps(expr, rng=None):
    """The pickle (protocol 2) of ``expr``."""
    return PickleWriter(rng).dumps(expr)


def zip_checkpoint(data_pkl, records=None, compress=None):
    """A checkpoint in torch.save's zip format around the pickle ``data_pkl``.

    Args:
        data_pkl (bytes): the pickle (``archive/data.pkl``).
        records (dict[str, bytes], optional): storage key -> bytes (``archive/data/<key>``).
        compress (set[str], optional): keys whose records are deflate-compressed, 'data.pkl'
            for the pickle's (torch.save stores every record; a zip tool may not).
    """
    compress = compress or set()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as archive:
        archive.writestr('archive/data.pkl', data_pkl, compress_type=(
            zipfile.ZIP_DEFLATED if 'data.pkl' in compress else zipfile.ZIP_STORED))
        archive.writestr('archive/byteorder', 'little')
        for key, data in (records or {}).items():
            method = zipfile.ZIP_DEFLATED if key in compress else zipfile.ZIP_STORED
            archive.writestr(f'archive/data/{key}', data, compress_type=method)
        archive.writestr('archive/version', '3\n')
    return buffer.getvalue()


def legacy_checkpoint(data_pkl, records=None):
    """A checkpoint in torch's legacy (pre-1.6, non-zip) format around ``data_pkl``.

    Args:
        data_pkl (bytes): the main pickle; its storages are persistent ids
            ``('storage', storage_type, key, location, numel, view_metadata)``.
        records (dict[str, tuple[int, bytes]], optional): storage key -> (element count,
            bytes), written after the pickle in order.
    """
    records = records or {}
    sys_info = dict(protocol_version=LEGACY_PROTOCOL, little_endian=True,
                    type_sizes=dict(short=2, int=4, long=4))
    parts = [pickle.dumps(LEGACY_MAGIC, protocol=2), pickle.dumps(LEGACY_PROTOCOL, protocol=2),
             pickle.dumps(sys_info, protocol=2), data_pkl,
             pickle.dumps(list(records), protocol=2)]
    for numel, data in records.values():
        parts.append(struct.pack('<q', max(min(numel, 2**63 - 1), -2**63)) + data)
    return b''.join(parts)


# --- known attacks ----------------------------------------------------------------------

def numpy_dtype(spec='f8', byteorder='<', state=None):
    """A numpy dtype as numpy pickles it (call, then BUILD of its state)."""
    if state is None:
        state = (3, byteorder, None, None, None, -1, -1, 0)
    return build(call(G('numpy', 'dtype'), spec, False, True), tup(*state))


def numpy_array(shape, dtype, data, module='numpy.core.multiarray', cls=G('numpy', 'ndarray')):
    """A numpy array as numpy pickles it: the empty array, then BUILD of its state."""
    empty = call(G(module, '_reconstruct'), cls, tup(0), encoded(b'b'))
    return build(empty, tup(1, tup(*shape), dtype, False, data))


def object_pointer_array(address=0x4141414141414141):
    """The finding: a float64 dtype rebuilt (BUILD) into a structured dtype whose field is an
    object, without the flags that make numpy pickle such arrays as lists; an array of it
    over 16 bytes from the file, whose ``['a']`` items are pointers the file chose."""
    object_dtype = call(G('numpy', 'dtype'), 'O8', False, True)
    rebuilt = numpy_dtype('f8', state=(3, '|', None, tup('a'), dct(('a', tup(object_dtype, 0))),
                                       8, 1, 0))
    return numpy_array((2, ), rebuilt, struct.pack('<QQ', address, address))


def object_dtype_array(address=0x4141414141414141):
    """An object dtype built directly, its array data bytes from the file."""
    object_dtype = numpy_dtype('O8', '|', state=(3, '|', None, None, None, -1, -1, 0))
    return numpy_array((1, ), object_dtype, struct.pack('<Q', address))


# --- the generator ------------------------------------------------------------------------

#: Globals a checkpoint may not use, each a near miss of an allowed one or a way to run code
#: when the marker file is given.
NEAR_MISSES = [
    ('numpy', 'frombuffer'), ('numpy.core.multiarray', 'frombuffer'),
    ('numpy.core.numeric', '_frombuffer'), ('numpy.dtypes', 'Float64DType'),
    ('numpy.dtypes', 'ObjectDType'), ('numpy.dtypes', 'VoidDType'), ('numpy', 'void'),
    ('numpy', 'float64'), ('numpy', 'ndarray.__new__'), ('numpy.core.multiarray', 'array'),
    ('numpy', 'array'), ('numpy.core.multiarray', '_reconstruct '), ('numpy', 'load'),
    ('numpy.lib.format', 'read_array'), ('numpy.ctypeslib', 'as_array'),
    ('mmengine.logging.history_buffer', 'HistoryBuffer.__init__'),
    ('mmengine.logging', 'HistoryBuffer'), ('builtins', 'object'), ('builtins', 'type'),
    ('ctypes', 'string_at'), ('torch', 'load'), ('torch.serialization', 'load'),
    ('torch', 'from_file'), ('torch', 'frombuffer'), ('torch.storage', '_load_from_bytes'),
]
CODE_RUNNERS = [('builtins', 'exec'), ('builtins', 'eval'), ('os', 'system'),
                ('posix', 'system'), ('subprocess', 'getoutput'), ('builtins', 'open'),
                ('__builtin__', 'eval'), ('nt', 'system')]

_DTYPE_SPECS = ['f8', 'f4', 'f2', 'f16', 'i8', 'i4', 'i2', 'i1', 'u1', 'u8', 'b1', 'c8',
                'c16', 'c32', 'O8', 'O', 'V8', 'V16', 'S3', 'U2', 'M8', 'm8', 'f8,i4',
                '(2,)f8', '<f8', '>i4', '|b1', 'i16', 'f3', 'q', 'x', '', 'V0',
                '[("a", "O")]']
_HISTORY_NAMES = ['min', 'max', 'current', 'mean', '__init__', 'update', '__class__',
                  '__setstate__', '_statistics_methods', 'statistics']
_NUMPY_MODULES = ['numpy.core.multiarray', 'numpy._core.multiarray']
_HISTORY_BUFFER = G('mmengine.logging.history_buffer', 'HistoryBuffer')


class CheckpointGenerator:
    """Random checkpoints from a seed: :meth:`checkpoint` returns ``(bytes, form)``.

    Args:
        seed (int): the seed; the same seed gives the same file.
        marker (str): the file a code-running near miss would create.
    """

    def __init__(self, seed, marker):
        self.rng = random.Random(seed)
        self.marker = str(marker)
        self.records = {}
        self.form = 'zip'

    # values -------------------------------------------------------------------------------

    def integer(self):
        r = self.rng
        return r.choice([0, 1, 2, 3, -1, 7, 255, 256, 2**31 - 1, -2**31, 2**32, 2**63 - 1,
                         2**63, 2**64, 10**12, -10**12, r.randrange(-5, 40),
                         r.randrange(2**16), r.randrange(2**40)])

    def shape(self):
        r = self.rng
        choice = r.random()
        if choice < 0.6:
            return tuple(r.randrange(0, 5) for _ in range(r.randrange(0, 4)))
        if choice < 0.8:
            return tuple(self.integer() for _ in range(r.randrange(1, 3)))
        return tuple(r.randrange(0, 3) for _ in range(r.choice([31, 32, 33, 64])))

    def literal(self):
        r = self.rng
        kind = r.randrange(7)
        if kind == 0:
            return self.integer()
        if kind == 1:
            return r.choice(['', 'a', 'mean', 'latin1', 'storage', 'cpu', 'f8', '<', '|',
                             'x' * r.randrange(50)])
        if kind == 2:
            return bytes(r.randrange(256) for _ in range(r.choice([0, 1, 2, 4, 8, 16, 24])))
        if kind == 3:
            return r.choice([None, True, False])
        if kind == 4:
            return r.choice([0.0, 1.5, -2.0, float('inf'), float('nan'), 1e308])
        if kind == 5:
            return tup(*[self.integer() for _ in range(r.randrange(4))])
        return memo_get()

    def dtype(self):
        """A numpy dtype: mostly genuine, else a mutated spec, call or state."""
        r = self.rng
        spec = r.choice(['f8', 'f4', 'i8', 'u1', 'b1', 'c16'] if r.random() < 0.5
                        else _DTYPE_SPECS)
        single = spec in ('u1', 'b1', 'i1', 'O', 'O8')
        byteorder = '|' if single else r.choice(['<', '<', '>'])
        state = [3, byteorder, None, None, None, -1, -1, 0]
        if r.random() < 0.35:
            position = r.randrange(8)
            state[position] = r.choice([
                4, 2, '=', '|', '<', tup('a'), dct(('a', tup(self.dtype_call(), 0))),
                tup(self.dtype_call(), tup(2)), 8, 16, 0, 1, 63, -1, 2**40,
                self.literal()])
        args = [spec, False, True]
        if r.random() < 0.15:
            args[r.randrange(3)] = self.literal()
        dtype_global = (G('numpy', 'dtype') if r.random() < 0.9
                        else G(*r.choice(NEAR_MISSES[3:10])))
        made = call(dtype_global, *args)
        if r.random() < 0.1:
            made = newobj(dtype_global, *args)
        if r.random() < 0.92:
            made = build(made, tup(*state))
        if r.random() < 0.05:
            made = build(made, tup(*state))  # a second BUILD
        return made

    def dtype_call(self):
        return call(G('numpy', 'dtype'), self.rng.choice(_DTYPE_SPECS), False, True)

    def array(self):
        r = self.rng
        shape = self.shape()
        dtype = self.dtype()
        itemsize = r.choice([1, 2, 4, 8, 16])
        size = 1
        for n in shape:
            size *= n
        length = size * itemsize if size * itemsize < 4096 else r.randrange(64)
        if r.random() < 0.3:
            length = max(0, length + r.choice([-1, 1, 8, -8, 7]))
        data = bytes(r.randrange(256) for _ in range(length))
        data_expr = data
        if r.random() < 0.1:
            data_expr = r.choice([lst(*data[:8]), call(G('builtins', 'bytearray'), length),
                                  self.literal(), memo_get()])
        module = r.choice(_NUMPY_MODULES) if r.random() < 0.95 else 'numpy.core.numeric'
        cls = G('numpy', 'ndarray') if r.random() < 0.9 else G(*r.choice(NEAR_MISSES))
        typecode = encoded(b'b') if r.random() < 0.9 else self.literal()
        base_shape = tup(0) if r.random() < 0.9 else tup(*self.shape())
        empty = call(G(module, '_reconstruct'), cls, base_shape, typecode)
        if r.random() < 0.05:
            empty = call(G('numpy', 'ndarray'), tup(*shape), self.dtype_call(), data)
        fortran = r.choice([False, False, True, 0, None])
        state = [1, tup(*shape), dtype, fortran, data_expr]
        if r.random() < 0.1:
            state[r.randrange(5)] = self.literal()
        made = build(empty, tup(*state)) if r.random() < 0.93 else empty
        if r.random() < 0.05:
            made = build(made, tup(*state))
        return made

    def scalar(self):
        r = self.rng
        width = r.choice([1, 2, 4, 8, 16, 3, 0])
        module = r.choice(_NUMPY_MODULES)
        dtype = self.dtype() if r.random() < 0.8 else self.dtype_call()
        return call(G(module, 'scalar'), dtype,
                    bytes(r.randrange(256) for _ in range(width)))

    def history_buffer(self, depth):
        r = self.rng
        length = r.randrange(4)
        arrays = [numpy_array((length, ), numpy_dtype('f8'), bytes(8 * length)),
                  numpy_array((length, ), numpy_dtype('i8'), bytes(8 * length))]
        if r.random() < 0.3:
            arrays[r.randrange(2)] = self.value(depth + 1)
        methods = dct(*[(name, call(G('builtins', 'getattr'),
                                    _HISTORY_BUFFER if r.random() < 0.9 else self.value(depth + 1),
                                    name))
                        for name in r.sample(_HISTORY_NAMES, r.randrange(3))])
        state = [('max_length', r.choice([10, 1, 0, -1, True, '10'])),
                 ('_log_history', arrays[0]), ('_count_history', arrays[1]),
                 ('statistics_methods', methods)]
        if r.random() < 0.2:
            state.pop(r.randrange(len(state)))
        if r.random() < 0.1:
            state.append(('extra', self.value(depth + 1)))
        made = newobj(_HISTORY_BUFFER) if r.random() < 0.9 else call(_HISTORY_BUFFER, 10)
        if r.random() < 0.9:
            made = build(made, dct(*state))
        return made

    def tensor(self):
        """A tensor over a persistent storage: mostly one torch.save would write, else with
        a mutated element count, record, location, offset, size or stride."""
        r = self.rng
        valid = r.random() < 0.6
        storage, elsize = r.choice(list(STORAGE_TYPES.items()))
        key = str(r.randrange(4))
        if key in self.records:
            storage, numel, data = self.records[key]
            elsize = STORAGE_TYPES[storage]
        else:
            numel = r.randrange(17) if valid else r.choice([0, 1, 3, 8, 16, self.integer()])
            have = numel if valid or numel >= 4096 else r.choice(
                [numel, max(numel - 1, 0), numel + 1, 0])
            if numel >= 4096:
                have = r.randrange(64)
            self.records[key] = (storage, numel, bytes(max(have, 0) * elsize))
        location = 'cpu' if valid else r.choice(['cpu', 'cpu', 'meta', 'cuda:0', 'xla', ''])
        if self.form == 'zip':
            pid = persistent('storage', G('torch', storage), key, location, numel)
        else:
            view = None if valid or r.random() < 0.7 else tup(key + 'v', self.integer(),
                                                               self.integer())
            pid = persistent('storage', G('torch', storage), key, location, numel, view)
        if valid and 0 <= numel < 4096:
            offset = r.randrange(numel + 1)
            size = tup(numel - offset) if r.random() < 0.7 else tup()
            stride = tup(1) if size.parts else tup()
            if not size.parts and offset == numel:
                offset = 0
        else:
            dims = r.randrange(4)
            size = tup(*[r.choice([0, 1, 2, 3, 4, self.integer()]) for _ in range(dims)])
            stride = tup(*[r.choice([0, 1, 2, self.integer()])
                           for _ in range(dims if r.random() < 0.8 else r.randrange(4))])
            offset = r.choice([0, 0, 1, 3, self.integer()])
        rebuild = r.choice(['_rebuild_tensor_v2', '_rebuild_tensor_v2', '_rebuild_tensor'])
        args = [pid, offset, size, stride]
        if rebuild == '_rebuild_tensor_v2':
            args += [False, call(G('collections', 'OrderedDict'))]
        made = call(G('torch._utils', rebuild), *args)
        if r.random() < 0.1:
            made = call(G('torch._utils', '_rebuild_parameter'), made, True,
                        call(G('collections', 'OrderedDict')))
        if r.random() < 0.05:
            made = call(G('torch._utils', '_rebuild_device_tensor_from_numpy'), self.array(),
                        G('torch', 'float32'), 'cpu', False)
        return made

    def torch_value(self):
        r = self.rng
        choice = r.randrange(11)
        if choice == 0:
            return call(G('torch', 'Size'), tup(*[self.integer() for _ in range(r.randrange(3))]))
        if choice == 1:
            return call(G('torch', 'device'), r.choice(['cpu', 'cuda', 'meta', 'xyz', '']))
        if choice == 2:
            return call(G('builtins', 'bytearray'), r.choice([0, 8, 10**6, 10**9, 2**40,
                                                              b'abc', -1]))
        if choice == 3:
            return call(G('builtins', 'set'), lst(*[self.literal() for _ in range(3)]))
        if choice == 4:
            return call(G('builtins', 'complex'), r.choice([1, 2.5, '1+2j', 'x']))
        if choice == 5:
            return call(G('__builtin__', 'bytes'), *r.choice([(), (10**9, ), (3, ), (b'x', )]))
        if choice == 6:
            return call(G('_codecs', 'encode'), memo_get(), r.choice(['latin1', 'utf-8',
                                                                       'hex', 'zlib']))
        if choice == 7:
            return call(G('torch', r.choice(['FloatTensor', 'Tensor', 'ByteTensor'])),
                        r.choice([0, 4, 10**4]))
        if choice == 8:
            return call(G('torch._utils', '_rebuild_meta_tensor_no_storage'),
                        G('torch', 'float32'), tup(self.integer()), tup(1), False)
        return self.torch_rebuild()

    def torch_rebuild(self):
        """torch's other rebuild functions (all on torch's own allow-list): subclasses and
        attributes, parameters with state, sparse, quantized, nested and wrapper tensors."""
        r = self.rng
        layout = call(G('torch.serialization', '_get_layout'),
                      r.choice(['torch.sparse_coo', 'torch.sparse_csr', 'torch.strided', 'x']))
        choice = r.randrange(6)
        if choice == 0:
            state = dct(*[(r.choice(['data', 'grad', 'requires_grad', 'extra', '__class__',
                                     '_backward_hooks']), self.value(3))
                          for _ in range(r.randrange(3))])
            return call(G('torch._tensor', '_rebuild_from_type_v2'),
                        G('torch._utils', '_rebuild_tensor_v2'),
                        G(*r.choice([('torch', 'Tensor'), ('torch.nn.parameter', 'Parameter'),
                                     ('numpy', 'ndarray')])),
                        tup(*self.tensor().parts[1].parts), state)
        if choice == 1:
            return call(G('torch._utils', '_rebuild_parameter_with_state'), self.tensor(),
                        r.choice([True, False]), call(G('collections', 'OrderedDict')),
                        dct(('extra', self.literal())))
        if choice == 2:
            return call(G('torch._utils', '_rebuild_sparse_tensor'), layout,
                        tup(self.tensor(), self.tensor(), tup(*self.shape()), False))
        if choice == 3:
            scheme = G('torch', r.choice(['per_tensor_affine', 'per_channel_affine']))
            return call(G('torch._utils', '_rebuild_qtensor'), self.tensor().parts[1].parts[0],
                        self.integer(), tup(*self.shape()), tup(*self.shape()),
                        tup(scheme, r.choice([1.0, 0.0, -1.0]), self.integer()), False,
                        call(G('collections', 'OrderedDict')))
        if choice == 4:
            return call(G('torch._utils', '_rebuild_nested_tensor'), self.tensor(),
                        self.tensor(), self.tensor(), self.tensor())
        return call(G('torch._utils', '_rebuild_wrapper_subclass'), G('torch', 'Tensor'),
                    G('torch', 'float32'), tup(*self.shape()), tup(*self.shape()),
                    self.integer(), layout, call(G('torch', 'device'), 'cpu'), False)

    def near_miss(self, depth):
        r = self.rng
        if r.random() < 0.4:
            module, name = r.choice(CODE_RUNNERS)
            command = (f"open({self.marker!r}, 'w').close()" if name in ('exec', 'eval')
                       else self.marker if name == 'open' else f'touch {self.marker}')
            args = (command, 'w') if name == 'open' else (command, )
            return call(G(module, name), *args)
        func = G(*r.choice(NEAR_MISSES))
        args = [self.value(depth + 1) for _ in range(r.randrange(3))]
        return r.choice([call, newobj])(func, *args)

    def rebuild(self):
        """A later BUILD of something memoised earlier (an array, dtype, buffer)."""
        return build(memo_get(), self.rng.choice([
            tup(1, tup(2), self.dtype(), False, bytes(16)), tup(3, '|', None, None, None, -1, -1,
                                                                0),
            dct(('max_length', 1)), self.literal()]))

    def value(self, depth=0):
        """One random value (a subtree of at most ``depth`` 5)."""
        r = self.rng
        if depth > 4:
            return self.literal()
        choice = r.random()
        # (upper end of the range of ``choice``, what it makes); above the last: a container
        for bound, make in ((0.16, self.literal), (0.30, self.array), (0.36, self.dtype),
                            (0.42, self.scalar), (0.52, partial(self.history_buffer, depth)),
                            (0.64, self.tensor), (0.70, self.torch_value),
                            (0.75, partial(self.near_miss, depth)), (0.80, self.rebuild)):
            if choice < bound:
                return make()
        items = [self.value(depth + 1) for _ in range(r.randrange(4))]
        kind = r.randrange(4)
        if kind == 0:
            return lst(*items)
        if kind == 1:
            return tup(*items)
        if kind == 2:
            return dct(*[(f'k{n}', item) for n, item in enumerate(items)])
        return call(G('collections', 'OrderedDict'), lst(*[tup(f'k{n}', item)
                                                           for n, item in enumerate(items)]))

    def checkpoint(self):
        """``(file bytes, 'zip' | 'legacy')``: a random checkpoint in one of torch's formats."""
        r = self.rng
        self.form = 'legacy' if r.random() < 0.25 else 'zip'
        self.records = {}
        body = dct(('state_dict', dct(*[(f'w{n}', self.tensor()) for n in range(r.randrange(3))])),
                   ('meta', self.value(1)), ('message_hub', self.value(0)))
        if r.random() < 0.2:
            body = self.value(0)
        data_pkl = dumps(body, rng=r)
        if self.form == 'legacy':
            records = {key: (numel, data) for key, (_, numel, data) in self.records.items()}
            return legacy_checkpoint(data_pkl, records), 'legacy'
        compress = {key for key in [*self.records, 'data.pkl'] if r.random() < 0.2}
        records = {key: data for key, (_, _, data) in self.records.items()}
        return zip_checkpoint(data_pkl, records, compress), 'zip'


def declare_record_size(archive, name, size):
    """``archive`` (zip bytes) with the record ``name`` declaring ``size`` uncompressed bytes
    (< 4 GiB) in its local header and its central directory entry, whatever it holds."""
    data = bytearray(archive)
    encoded_name = name.encode()
    # (signature, offsets of the name's length, the name, the uncompressed size) of the local
    # file header and of the central directory entry
    for signature, length_at, name_at, size_at in ((b'PK\x03\x04', 26, 30, 22),
                                                   (b'PK\x01\x02', 28, 46, 24)):
        start = data.find(signature)
        while start >= 0:
            length = struct.unpack_from('<H', data, start + length_at)[0]
            if data[start + name_at:start + name_at + length] == encoded_name:
                struct.pack_into('<I', data, start + size_at, size)
            start = data.find(signature, start + 4)
    return bytes(data)
