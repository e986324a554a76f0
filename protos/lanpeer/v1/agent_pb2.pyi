from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrackerSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRACKER_SOURCE_UNSPECIFIED: _ClassVar[TrackerSource]
    TRACKER_SOURCE_CONFIGURED: _ClassVar[TrackerSource]
    TRACKER_SOURCE_MDNS: _ClassVar[TrackerSource]
TRACKER_SOURCE_UNSPECIFIED: TrackerSource
TRACKER_SOURCE_CONFIGURED: TrackerSource
TRACKER_SOURCE_MDNS: TrackerSource

class GetRequest(_message.Message):
    __slots__ = ("source", "output", "sha256", "connections", "no_origin", "force", "policy")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    NO_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    source: str
    output: str
    sha256: str
    connections: int
    no_origin: bool
    force: bool
    policy: str
    def __init__(self, source: _Optional[str] = ..., output: _Optional[str] = ..., sha256: _Optional[str] = ..., connections: _Optional[int] = ..., no_origin: _Optional[bool] = ..., force: _Optional[bool] = ..., policy: _Optional[str] = ...) -> None: ...

class GetProgress(_message.Message):
    __slots__ = ("size", "done_bytes", "peers_active", "origin_active", "elapsed_seconds")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DONE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PEERS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    size: int
    done_bytes: int
    peers_active: int
    origin_active: bool
    elapsed_seconds: float
    def __init__(self, size: _Optional[int] = ..., done_bytes: _Optional[int] = ..., peers_active: _Optional[int] = ..., origin_active: _Optional[bool] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...

class GetSummary(_message.Message):
    __slots__ = ("path", "sha256", "size", "seconds", "bytes_from_peers", "bytes_from_origin", "resumed_bytes", "sources_used", "pieces_refetched", "already_there", "bytes_by_source")
    class BytesBySourceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PATH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FROM_PEERS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FROM_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    RESUMED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SOURCES_USED_FIELD_NUMBER: _ClassVar[int]
    PIECES_REFETCHED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_THERE_FIELD_NUMBER: _ClassVar[int]
    BYTES_BY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    path: str
    sha256: str
    size: int
    seconds: float
    bytes_from_peers: int
    bytes_from_origin: int
    resumed_bytes: int
    sources_used: _containers.RepeatedScalarFieldContainer[str]
    pieces_refetched: int
    already_there: bool
    bytes_by_source: _containers.ScalarMap[str, int]
    def __init__(self, path: _Optional[str] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ..., seconds: _Optional[float] = ..., bytes_from_peers: _Optional[int] = ..., bytes_from_origin: _Optional[int] = ..., resumed_bytes: _Optional[int] = ..., sources_used: _Optional[_Iterable[str]] = ..., pieces_refetched: _Optional[int] = ..., already_there: _Optional[bool] = ..., bytes_by_source: _Optional[_Mapping[str, int]] = ...) -> None: ...

class GetEvent(_message.Message):
    __slots__ = ("progress", "summary")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    progress: GetProgress
    summary: GetSummary
    def __init__(self, progress: _Optional[_Union[GetProgress, _Mapping]] = ..., summary: _Optional[_Union[GetSummary, _Mapping]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DownloadStatus(_message.Message):
    __slots__ = ("source", "output", "progress")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    source: str
    output: str
    progress: GetProgress
    def __init__(self, source: _Optional[str] = ..., output: _Optional[str] = ..., progress: _Optional[_Union[GetProgress, _Mapping]] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("agent_id", "base_url", "shares", "files", "bytes_held", "active_uploads", "bytes_served", "tracker", "tracker_connected", "downloads", "version", "tracker_source", "cluster", "discovery_note")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_HELD_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_UPLOADS_FIELD_NUMBER: _ClassVar[int]
    BYTES_SERVED_FIELD_NUMBER: _ClassVar[int]
    TRACKER_FIELD_NUMBER: _ClassVar[int]
    TRACKER_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    DOWNLOADS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TRACKER_SOURCE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    DISCOVERY_NOTE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    base_url: str
    shares: _containers.RepeatedScalarFieldContainer[str]
    files: int
    bytes_held: int
    active_uploads: int
    bytes_served: int
    tracker: str
    tracker_connected: bool
    downloads: _containers.RepeatedCompositeFieldContainer[DownloadStatus]
    version: str
    tracker_source: TrackerSource
    cluster: str
    discovery_note: str
    def __init__(self, agent_id: _Optional[str] = ..., base_url: _Optional[str] = ..., shares: _Optional[_Iterable[str]] = ..., files: _Optional[int] = ..., bytes_held: _Optional[int] = ..., active_uploads: _Optional[int] = ..., bytes_served: _Optional[int] = ..., tracker: _Optional[str] = ..., tracker_connected: _Optional[bool] = ..., downloads: _Optional[_Iterable[_Union[DownloadStatus, _Mapping]]] = ..., version: _Optional[str] = ..., tracker_source: _Optional[_Union[TrackerSource, str]] = ..., cluster: _Optional[str] = ..., discovery_note: _Optional[str] = ...) -> None: ...
