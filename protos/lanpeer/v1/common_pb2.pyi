from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Manifest(_message.Message):
    __slots__ = ("sha256", "size", "piece_size", "piece_sha256s")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PIECE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PIECE_SHA256S_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    piece_size: int
    piece_sha256s: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ..., piece_size: _Optional[int] = ..., piece_sha256s: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Validator(_message.Message):
    __slots__ = ("etag", "last_modified", "content_length")
    ETAG_FIELD_NUMBER: _ClassVar[int]
    LAST_MODIFIED_FIELD_NUMBER: _ClassVar[int]
    CONTENT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    etag: str
    last_modified: str
    content_length: int
    def __init__(self, etag: _Optional[str] = ..., last_modified: _Optional[str] = ..., content_length: _Optional[int] = ...) -> None: ...

class SourceRef(_message.Message):
    __slots__ = ("url", "validator")
    URL_FIELD_NUMBER: _ClassVar[int]
    VALIDATOR_FIELD_NUMBER: _ClassVar[int]
    url: str
    validator: Validator
    def __init__(self, url: _Optional[str] = ..., validator: _Optional[_Union[Validator, _Mapping]] = ...) -> None: ...

class ContentQuery(_message.Message):
    __slots__ = ("sha256", "source", "name", "url")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    source: SourceRef
    name: str
    url: str
    def __init__(self, sha256: _Optional[str] = ..., source: _Optional[_Union[SourceRef, _Mapping]] = ..., name: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class PieceSet(_message.Message):
    __slots__ = ("bitmap",)
    BITMAP_FIELD_NUMBER: _ClassVar[int]
    bitmap: bytes
    def __init__(self, bitmap: _Optional[bytes] = ...) -> None: ...
