from lanpeer.v1 import common_pb2 as _common_pb2
from lanpeer.v1 import tracker_pb2 as _tracker_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HolderState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOLDER_STATE_UNSPECIFIED: _ClassVar[HolderState]
    HOLDER_STATE_LIVE: _ClassVar[HolderState]
    HOLDER_STATE_DEAD: _ClassVar[HolderState]
    HOLDER_STATE_BAD: _ClassVar[HolderState]
HOLDER_STATE_UNSPECIFIED: HolderState
HOLDER_STATE_LIVE: HolderState
HOLDER_STATE_DEAD: HolderState
HOLDER_STATE_BAD: HolderState

class ListAgentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("agent_id", "hostname", "base_url", "version", "live", "last_seen_age_seconds", "files", "bytes_held", "load", "bad_source_reports", "banned")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_HELD_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    BAD_SOURCE_REPORTS_FIELD_NUMBER: _ClassVar[int]
    BANNED_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    hostname: str
    base_url: str
    version: str
    live: bool
    last_seen_age_seconds: float
    files: int
    bytes_held: int
    load: _tracker_pb2.Load
    bad_source_reports: int
    banned: bool
    def __init__(self, agent_id: _Optional[str] = ..., hostname: _Optional[str] = ..., base_url: _Optional[str] = ..., version: _Optional[str] = ..., live: _Optional[bool] = ..., last_seen_age_seconds: _Optional[float] = ..., files: _Optional[int] = ..., bytes_held: _Optional[int] = ..., load: _Optional[_Union[_tracker_pb2.Load, _Mapping]] = ..., bad_source_reports: _Optional[int] = ..., banned: _Optional[bool] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentStatus]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentStatus, _Mapping]]] = ...) -> None: ...

class ListFilesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class FileSummary(_message.Message):
    __slots__ = ("sha256", "size", "names", "live_holders", "holders", "has_manifest", "sources")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    LIVE_HOLDERS_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    HAS_MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    names: _containers.RepeatedScalarFieldContainer[str]
    live_holders: int
    holders: int
    has_manifest: bool
    sources: _containers.RepeatedCompositeFieldContainer[_common_pb2.SourceRef]
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ..., names: _Optional[_Iterable[str]] = ..., live_holders: _Optional[int] = ..., holders: _Optional[int] = ..., has_manifest: _Optional[bool] = ..., sources: _Optional[_Iterable[_Union[_common_pb2.SourceRef, _Mapping]]] = ...) -> None: ...

class ListFilesResponse(_message.Message):
    __slots__ = ("files", "next_page_token")
    FILES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[FileSummary]
    next_page_token: str
    def __init__(self, files: _Optional[_Iterable[_Union[FileSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class InspectContentRequest(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: _common_pb2.ContentQuery
    def __init__(self, query: _Optional[_Union[_common_pb2.ContentQuery, _Mapping]] = ...) -> None: ...

class HolderStatus(_message.Message):
    __slots__ = ("holder", "state")
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    holder: _tracker_pb2.Holder
    state: HolderState
    def __init__(self, holder: _Optional[_Union[_tracker_pb2.Holder, _Mapping]] = ..., state: _Optional[_Union[HolderState, str]] = ...) -> None: ...

class ContentDetails(_message.Message):
    __slots__ = ("sha256", "size", "manifest", "names", "holders", "sources")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    manifest: _common_pb2.Manifest
    names: _containers.RepeatedScalarFieldContainer[str]
    holders: _containers.RepeatedCompositeFieldContainer[HolderStatus]
    sources: _containers.RepeatedCompositeFieldContainer[_common_pb2.SourceRef]
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ..., manifest: _Optional[_Union[_common_pb2.Manifest, _Mapping]] = ..., names: _Optional[_Iterable[str]] = ..., holders: _Optional[_Iterable[_Union[HolderStatus, _Mapping]]] = ..., sources: _Optional[_Iterable[_Union[_common_pb2.SourceRef, _Mapping]]] = ...) -> None: ...

class InspectContentResponse(_message.Message):
    __slots__ = ("matches",)
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[ContentDetails]
    def __init__(self, matches: _Optional[_Iterable[_Union[ContentDetails, _Mapping]]] = ...) -> None: ...

class EvictAgentRequest(_message.Message):
    __slots__ = ("agent_id", "ban")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    BAN_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    ban: bool
    def __init__(self, agent_id: _Optional[str] = ..., ban: _Optional[bool] = ...) -> None: ...

class EvictAgentResponse(_message.Message):
    __slots__ = ("holdings_removed",)
    HOLDINGS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    holdings_removed: int
    def __init__(self, holdings_removed: _Optional[int] = ...) -> None: ...

class UnbanAgentRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class UnbanAgentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("live_agents", "dead_agents", "banned_agents", "distinct_files", "holdings", "bytes_held", "manifests", "sources", "bad_source_reports", "swarms", "swarm_members", "bytes_from_peers", "bytes_from_origin")
    LIVE_AGENTS_FIELD_NUMBER: _ClassVar[int]
    DEAD_AGENTS_FIELD_NUMBER: _ClassVar[int]
    BANNED_AGENTS_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_FILES_FIELD_NUMBER: _ClassVar[int]
    HOLDINGS_FIELD_NUMBER: _ClassVar[int]
    BYTES_HELD_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    BAD_SOURCE_REPORTS_FIELD_NUMBER: _ClassVar[int]
    SWARMS_FIELD_NUMBER: _ClassVar[int]
    SWARM_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FROM_PEERS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FROM_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    live_agents: int
    dead_agents: int
    banned_agents: int
    distinct_files: int
    holdings: int
    bytes_held: int
    manifests: int
    sources: int
    bad_source_reports: int
    swarms: int
    swarm_members: int
    bytes_from_peers: int
    bytes_from_origin: int
    def __init__(self, live_agents: _Optional[int] = ..., dead_agents: _Optional[int] = ..., banned_agents: _Optional[int] = ..., distinct_files: _Optional[int] = ..., holdings: _Optional[int] = ..., bytes_held: _Optional[int] = ..., manifests: _Optional[int] = ..., sources: _Optional[int] = ..., bad_source_reports: _Optional[int] = ..., swarms: _Optional[int] = ..., swarm_members: _Optional[int] = ..., bytes_from_peers: _Optional[int] = ..., bytes_from_origin: _Optional[int] = ...) -> None: ...
