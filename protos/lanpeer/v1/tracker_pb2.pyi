from lanpeer.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HeartbeatAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEARTBEAT_ACTION_UNSPECIFIED: _ClassVar[HeartbeatAction]
    HEARTBEAT_ACTION_NONE: _ClassVar[HeartbeatAction]
    HEARTBEAT_ACTION_RESYNC: _ClassVar[HeartbeatAction]
    HEARTBEAT_ACTION_REGISTER: _ClassVar[HeartbeatAction]
HEARTBEAT_ACTION_UNSPECIFIED: HeartbeatAction
HEARTBEAT_ACTION_NONE: HeartbeatAction
HEARTBEAT_ACTION_RESYNC: HeartbeatAction
HEARTBEAT_ACTION_REGISTER: HeartbeatAction

class RegisterRequest(_message.Message):
    __slots__ = ("agent_id", "hostname", "base_url", "version")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    hostname: str
    base_url: str
    version: str
    def __init__(self, agent_id: _Optional[str] = ..., hostname: _Optional[str] = ..., base_url: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("heartbeat_interval_ms",)
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_ms: int
    def __init__(self, heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class Load(_message.Message):
    __slots__ = ("active_uploads", "active_downloads")
    ACTIVE_UPLOADS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_DOWNLOADS_FIELD_NUMBER: _ClassVar[int]
    active_uploads: int
    active_downloads: int
    def __init__(self, active_uploads: _Optional[int] = ..., active_downloads: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("agent_id", "generation", "load", "bytes_from_peers", "bytes_from_origin")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    BYTES_FROM_PEERS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FROM_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    generation: int
    load: Load
    bytes_from_peers: int
    bytes_from_origin: int
    def __init__(self, agent_id: _Optional[str] = ..., generation: _Optional[int] = ..., load: _Optional[_Union[Load, _Mapping]] = ..., bytes_from_peers: _Optional[int] = ..., bytes_from_origin: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("action", "heartbeat_interval_ms")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    action: HeartbeatAction
    heartbeat_interval_ms: int
    def __init__(self, action: _Optional[_Union[HeartbeatAction, str]] = ..., heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class Holding(_message.Message):
    __slots__ = ("sha256", "size", "name", "complete", "pieces")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    PIECES_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    name: str
    complete: bool
    pieces: _common_pb2.PieceSet
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ..., name: _Optional[str] = ..., complete: _Optional[bool] = ..., pieces: _Optional[_Union[_common_pb2.PieceSet, _Mapping]] = ...) -> None: ...

class SyncInventoryRequest(_message.Message):
    __slots__ = ("agent_id", "generation", "full", "holdings", "removed_sha256s")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    HOLDINGS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_SHA256S_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    generation: int
    full: bool
    holdings: _containers.RepeatedCompositeFieldContainer[Holding]
    removed_sha256s: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_id: _Optional[str] = ..., generation: _Optional[int] = ..., full: _Optional[bool] = ..., holdings: _Optional[_Iterable[_Union[Holding, _Mapping]]] = ..., removed_sha256s: _Optional[_Iterable[str]] = ...) -> None: ...

class SyncInventoryResponse(_message.Message):
    __slots__ = ("resync_needed", "generation")
    RESYNC_NEEDED_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    resync_needed: bool
    generation: int
    def __init__(self, resync_needed: _Optional[bool] = ..., generation: _Optional[int] = ...) -> None: ...

class LocateRequest(_message.Message):
    __slots__ = ("query", "max_holders", "policy", "requester_agent_id")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    MAX_HOLDERS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    query: _common_pb2.ContentQuery
    max_holders: int
    policy: str
    requester_agent_id: str
    def __init__(self, query: _Optional[_Union[_common_pb2.ContentQuery, _Mapping]] = ..., max_holders: _Optional[int] = ..., policy: _Optional[str] = ..., requester_agent_id: _Optional[str] = ...) -> None: ...

class Holder(_message.Message):
    __slots__ = ("agent_id", "hostname", "base_url", "complete", "pieces", "load")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    PIECES_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    hostname: str
    base_url: str
    complete: bool
    pieces: _common_pb2.PieceSet
    load: Load
    def __init__(self, agent_id: _Optional[str] = ..., hostname: _Optional[str] = ..., base_url: _Optional[str] = ..., complete: _Optional[bool] = ..., pieces: _Optional[_Union[_common_pb2.PieceSet, _Mapping]] = ..., load: _Optional[_Union[Load, _Mapping]] = ...) -> None: ...

class ContentMatch(_message.Message):
    __slots__ = ("sha256", "size", "manifest", "names", "holders")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    manifest: _common_pb2.Manifest
    names: _containers.RepeatedScalarFieldContainer[str]
    holders: _containers.RepeatedCompositeFieldContainer[Holder]
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ..., manifest: _Optional[_Union[_common_pb2.Manifest, _Mapping]] = ..., names: _Optional[_Iterable[str]] = ..., holders: _Optional[_Iterable[_Union[Holder, _Mapping]]] = ...) -> None: ...

class LocateResponse(_message.Message):
    __slots__ = ("matches",)
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[ContentMatch]
    def __init__(self, matches: _Optional[_Iterable[_Union[ContentMatch, _Mapping]]] = ...) -> None: ...

class PublishManifestRequest(_message.Message):
    __slots__ = ("agent_id", "manifest")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    manifest: _common_pb2.Manifest
    def __init__(self, agent_id: _Optional[str] = ..., manifest: _Optional[_Union[_common_pb2.Manifest, _Mapping]] = ...) -> None: ...

class PublishManifestResponse(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: _Optional[bool] = ...) -> None: ...

class PublishSourceRequest(_message.Message):
    __slots__ = ("agent_id", "source", "sha256")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    source: _common_pb2.SourceRef
    sha256: str
    def __init__(self, agent_id: _Optional[str] = ..., source: _Optional[_Union[_common_pb2.SourceRef, _Mapping]] = ..., sha256: _Optional[str] = ...) -> None: ...

class PublishSourceResponse(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: _Optional[bool] = ...) -> None: ...

class ReportBadSourceRequest(_message.Message):
    __slots__ = ("reporter_agent_id", "holder_agent_id", "sha256", "piece_index", "reason")
    REPORTER_AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOLDER_AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PIECE_INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    reporter_agent_id: str
    holder_agent_id: str
    sha256: str
    piece_index: int
    reason: str
    def __init__(self, reporter_agent_id: _Optional[str] = ..., holder_agent_id: _Optional[str] = ..., sha256: _Optional[str] = ..., piece_index: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ReportBadSourceResponse(_message.Message):
    __slots__ = ("holder_report_count",)
    HOLDER_REPORT_COUNT_FIELD_NUMBER: _ClassVar[int]
    holder_report_count: int
    def __init__(self, holder_report_count: _Optional[int] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class LeaveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PieceHash(_message.Message):
    __slots__ = ("index", "sha256")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    index: int
    sha256: bytes
    def __init__(self, index: _Optional[int] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class AnnounceRequest(_message.Message):
    __slots__ = ("agent_id", "swarm_id", "size", "piece_size", "have", "hashes", "hashes_known", "seed_claims", "want_seed", "complete", "leaving")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SWARM_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PIECE_SIZE_FIELD_NUMBER: _ClassVar[int]
    HAVE_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    HASHES_KNOWN_FIELD_NUMBER: _ClassVar[int]
    SEED_CLAIMS_FIELD_NUMBER: _ClassVar[int]
    WANT_SEED_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    swarm_id: str
    size: int
    piece_size: int
    have: _common_pb2.PieceSet
    hashes: _containers.RepeatedCompositeFieldContainer[PieceHash]
    hashes_known: _common_pb2.PieceSet
    seed_claims: _containers.RepeatedScalarFieldContainer[int]
    want_seed: int
    complete: bool
    leaving: bool
    def __init__(self, agent_id: _Optional[str] = ..., swarm_id: _Optional[str] = ..., size: _Optional[int] = ..., piece_size: _Optional[int] = ..., have: _Optional[_Union[_common_pb2.PieceSet, _Mapping]] = ..., hashes: _Optional[_Iterable[_Union[PieceHash, _Mapping]]] = ..., hashes_known: _Optional[_Union[_common_pb2.PieceSet, _Mapping]] = ..., seed_claims: _Optional[_Iterable[int]] = ..., want_seed: _Optional[int] = ..., complete: _Optional[bool] = ..., leaving: _Optional[bool] = ...) -> None: ...

class SwarmMember(_message.Message):
    __slots__ = ("agent_id", "base_url", "complete", "have")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    HAVE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    base_url: str
    complete: bool
    have: _common_pb2.PieceSet
    def __init__(self, agent_id: _Optional[str] = ..., base_url: _Optional[str] = ..., complete: _Optional[bool] = ..., have: _Optional[_Union[_common_pb2.PieceSet, _Mapping]] = ...) -> None: ...

class AnnounceResponse(_message.Message):
    __slots__ = ("members", "hashes", "hashes_known", "seed_granted", "seed_claimed", "hash_conflicts", "interval_ms")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    HASHES_KNOWN_FIELD_NUMBER: _ClassVar[int]
    SEED_GRANTED_FIELD_NUMBER: _ClassVar[int]
    SEED_CLAIMED_FIELD_NUMBER: _ClassVar[int]
    HASH_CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[SwarmMember]
    hashes: _containers.RepeatedCompositeFieldContainer[PieceHash]
    hashes_known: _common_pb2.PieceSet
    seed_granted: _containers.RepeatedScalarFieldContainer[int]
    seed_claimed: _common_pb2.PieceSet
    hash_conflicts: _containers.RepeatedScalarFieldContainer[int]
    interval_ms: int
    def __init__(self, members: _Optional[_Iterable[_Union[SwarmMember, _Mapping]]] = ..., hashes: _Optional[_Iterable[_Union[PieceHash, _Mapping]]] = ..., hashes_known: _Optional[_Union[_common_pb2.PieceSet, _Mapping]] = ..., seed_granted: _Optional[_Iterable[int]] = ..., seed_claimed: _Optional[_Union[_common_pb2.PieceSet, _Mapping]] = ..., hash_conflicts: _Optional[_Iterable[int]] = ..., interval_ms: _Optional[int] = ...) -> None: ...
