"""Validating and matching Cilium Kafka rules (pure: no I/O, no state).

Owns the semantics of one ``PortRuleKafka`` list, as Cilium defines them
(``pkg/policy/api/kafka/kafka.go`` for the fields, ``pkg/kafka/request.go``
``MatchesRule`` for the matching): a rule matches a request on its api key (``role``
expands to a set of keys, ``apiKey`` names one, neither means any key), its api version
(exact) and its client id (exact); an absent or empty field matches anything. ``topic``
is special: a request that names topics passes only if EVERY topic it names is allowed
by some rule that also matches key, version and client id (Cilium removes each topic
from a set as rules match and allows once the set is empty); a rule without a topic,
a request type that carries no topics, or a request with an empty topic list is
judged on key, version and client id alone.

Also owns the api key names (Cilium's ``APIKeyMap``) and the roles (Cilium's
``MapRoleToAPIKey``), so the policy parser, the proxy and ``policy trace`` read them
from one place, and :func:`check_rule`, the validation the parser runs, so what
imports is what the proxy compiles.

:class:`KafkaRuleSet` compiles a list once and indexes its rules by api key; a request
only looks at the rules that can accept its key.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

# Cilium's APIKeyMap, in key order: the names a rule's ``apiKey`` may use. Cilium has
# no names beyond alterconfigs (33); bigger keys are shown as numbers.
_NAMES = ("produce", "fetch", "offsets", "metadata", "leaderandisr", "stopreplica",
          "updatemetadata", "controlledshutdown", "offsetcommit", "offsetfetch",
          "findcoordinator", "joingroup", "heartbeat", "leavegroup", "syncgroup",
          "describegroups", "listgroups", "saslhandshake", "apiversions", "createtopics",
          "deletetopics", "deleterecords", "initproducerid", "offsetforleaderepoch",
          "addpartitionstotxn", "addoffsetstotxn", "endtxn", "writetxnmarkers",
          "txnoffsetcommit", "describeacls", "createacls", "deleteacls", "describeconfigs",
          "alterconfigs")
API_KEYS: dict[str, int] = {name: number for number, name in enumerate(_NAMES)}
API_NAMES: dict[int, str] = dict(enumerate(_NAMES))
# Cilium's role expansion (PortRuleKafka.MapRoleToAPIKey): what a producer or a
# consumer needs besides the data request itself (metadata, apiversions, the group
# protocol for consumers).
ROLES: dict[str, frozenset[int]] = {
    "produce": frozenset({0, 3, 18}),
    "consume": frozenset({1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18}),
}
# The request types Cilium knows to carry topics (isTopicAPIKey). When the topics of
# such a request are unknown (``KafkaRequest.topics is None``: not decoded), a rule
# with a topic cannot match it: Cilium's matchNonTopicRequests fails closed the same
# way, so an undecoded DeleteTopics is never allowed by ``{apiKey: deletetopics,
# topic: a}``.
TOPIC_API_KEYS = frozenset({0, 1, 2, 3, 4, 5, 6, 8, 9, 19, 20, 21, 23, 24, 27, 28, 34, 35,
                            37})
INT16_MAX = 32767  # api keys and versions are int16 on the wire
FIELDS = ("role", "apiKey", "apiVersion", "clientID", "topic")
# Cilium: at most 255 characters (Kafka >= 0.10 allows 249; Cilium keeps the old limit)
TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,255}")


class KafkaRuleError(ValueError):
    """A Kafka rule that cannot be compiled; ``field`` names the offending field (None:
    the rule as a whole)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def api_key_name(key: int) -> str:
    """Cilium's name for an api key (``ApiKeyToString``): ``produce``, or ``"47"``."""
    return API_NAMES.get(key, str(key))


def parse_api_key(text: str) -> int:
    """An api key given as a name (case-insensitive) or a number (0..32767)."""
    word = str(text).strip()
    if re.fullmatch(r"\d{1,5}", word) and int(word) <= INT16_MAX:
        return int(word)
    if word.lower() in API_KEYS:
        return API_KEYS[word.lower()]
    hint = difflib.get_close_matches(word.lower(), _NAMES, n=1)
    raise ValueError(f"unknown Kafka apiKey {text!r}: not a name such as produce, fetch, "
                     "metadata, nor a number 0..32767"
                     + (f" (did you mean {hint[0]!r}?)" if hint else ""))


@dataclass(frozen=True)
class KafkaRequest:
    """What the rules look at in one Kafka request.

    ``topics``: the topic names the request carries, in request order; ``None`` when
    the request type carries no topics. ``None`` for a type that does carry topics
    (:data:`TOPIC_API_KEYS`) means "not decoded": then only rules without a topic can
    allow it. An empty tuple (e.g. a Metadata request for no topics) is judged on key,
    version and client id, as in Cilium; a request naming its topics only by topic id
    must therefore be passed as ``None``, not ``()``, so it fails closed.
    """

    api_key: int
    api_version: int
    client_id: str | None
    topics: tuple[str, ...] | None


@dataclass(frozen=True)
class KafkaMatch:
    allowed: bool
    rule_index: int | None  # the deciding rule (multi-topic: the one that covered the last)
    reason: str


@dataclass(frozen=True)
class _Rule:
    index: int
    keys: frozenset[int] | None  # None: any api key
    version: int | None
    client: str | None
    topic: str | None
    allows: KafkaMatch  # the answer when this rule decides (built once, shared)
    covers: KafkaMatch  # ... when it covers the last of several topics


def _text(rule: dict, name: str) -> str | None:
    """A field as a string; absent, null or empty means "any" (Cilium's omitempty)."""
    value = rule.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise KafkaRuleError(f"{name} must be a string, not {type(value).__name__}", name)
    return str(value)


def check_rule(rule: object) -> tuple[frozenset[int] | None, int | None, str | None,
                                      str | None]:
    """Validates one rule as written in a policy file (Cilium's ``Sanitize``) and
    returns (api keys or None, version or None, client id or None, topic or None).
    Raises KafkaRuleError."""
    if not isinstance(rule, dict):
        raise KafkaRuleError(f"a Kafka rule must be a mapping, not {type(rule).__name__}")
    for name in rule:
        if name not in FIELDS:
            hint = difflib.get_close_matches(str(name), FIELDS, n=1)
            raise KafkaRuleError(f"unknown field {name!r} in a Kafka rule"
                                 + (f" (did you mean {hint[0]!r}?)" if hint else ""), name)
    role, api_key = _text(rule, "role"), _text(rule, "apiKey")
    if role is not None and api_key is not None:
        raise KafkaRuleError("role and apiKey cannot be combined")
    keys = None
    if role is not None:
        if role.lower() not in ROLES:
            raise KafkaRuleError(f"{role!r} is not produce or consume", "role")
        keys = ROLES[role.lower()]
    if api_key is not None:
        if api_key.lower() not in API_KEYS:  # names only, as Cilium's APIKeyMap
            hint = difflib.get_close_matches(api_key.lower(), _NAMES, n=1)
            raise KafkaRuleError(f"unknown Kafka apiKey {api_key!r}"
                                 + (f" (did you mean {hint[0]!r}?)" if hint else ""), "apiKey")
        keys = frozenset({API_KEYS[api_key.lower()]})
    version = _text(rule, "apiVersion")
    if version is not None and not (re.fullmatch(r"\d{1,5}", version)
                                    and int(version) <= INT16_MAX):
        raise KafkaRuleError(f"apiVersion {version!r} is not an integer 0..{INT16_MAX}",
                             "apiVersion")
    topic = _text(rule, "topic")
    if topic is not None and not TOPIC.fullmatch(topic):
        raise KafkaRuleError(f"{topic!r} is not a valid Kafka topic (1-255 characters of "
                             "a-z, A-Z, 0-9, '.', '_', '-')", "topic")
    return keys, None if version is None else int(version), _text(rule, "clientID"), topic


class KafkaRuleSet:
    """A compiled ``kafka:`` list.

    ``None`` and ``[]`` both allow every request. Cilium's proxy itself denies
    everything for an empty list (``MatchesRule([])`` is false), but it never gets one:
    ``L7Rules.IsEmpty`` counts ``kafka: []`` as no L7 rules, and the Envoy policy only
    carries Kafka rules when there is at least one (``pkg/envoy/server.go``), so the
    peer is allowed at L4 and every request passes, exactly as with one rule ``{}``
    (all fields empty: matches every request). ciliumpy's HTTP ``RuleSet`` treats
    ``http: []`` the same way.
    """

    def __init__(self, rules: list[dict] | None) -> None:
        if rules is not None and not isinstance(rules, list | tuple):
            raise KafkaRuleError(f"Kafka rules must be a list, not {type(rules).__name__}")
        self.rules: tuple[dict, ...] = tuple(rules or ())
        self.allow_all = not self.rules
        compiled = []
        for index, rule in enumerate(self.rules):
            try:
                keys, version, client, topic = check_rule(rule)
            except KafkaRuleError as exc:
                where = f"Kafka rule #{index}" + (f" {exc.field}" if exc.field else "")
                raise KafkaRuleError(f"{where}: {exc}", exc.field) from None
            compiled.append(_Rule(
                index, keys, version, client, topic,
                KafkaMatch(True, index, f"allowed by Kafka rule #{index}"),
                KafkaMatch(True, index, f"every topic is allowed, the last by Kafka rule "
                                        f"#{index}")))
        self.needs_topics: bool = any(r.topic is not None for r in compiled)
        # Index by api key, keeping list order: a key named by some rule gets the rules
        # naming it plus the any-key rules; every other key only the any-key rules.
        self._any_key = tuple(r for r in compiled if r.keys is None)
        named = set().union(*(r.keys for r in compiled if r.keys is not None))
        self._by_key: dict[int, tuple[_Rule, ...]] = {
            key: tuple(r for r in compiled if r.keys is None or key in r.keys)
            for key in named}

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, req: KafkaRequest) -> KafkaMatch:
        """Cilium's MatchesRule: the first rule that matches without a topic condition
        decides; topic rules cover the request's topics one by one."""
        if self.allow_all:
            return _ALLOW_ALL
        topics = req.topics
        # No topics to cover: a topic rule then matches on key/version/client alone,
        # unless the type carries topics that were not decoded (fail closed).
        topic_free = not topics and not (topics is None and req.api_key in TOPIC_API_KEYS)
        pending: set[str] | None = None
        for rule in self._by_key.get(req.api_key, self._any_key):
            if rule.version is not None and rule.version != req.api_version:
                continue
            if rule.client is not None and rule.client != req.client_id:
                continue
            if rule.topic is None or topic_free:
                return rule.allows
            if not topics:
                continue  # undecoded topics: only a rule without a topic may allow
            if pending is None:
                pending = set(topics)
            if rule.topic in pending:
                pending.discard(rule.topic)
                if not pending:
                    return rule.allows if len(topics) == 1 else rule.covers
        return KafkaMatch(False, None, self._why_not(req))

    def _why_not(self, req: KafkaRequest) -> str:
        """Why no rule allows ``req`` (the deny path only: it may look at rules twice)."""
        name = api_key_name(req.api_key)
        rules = self._by_key.get(req.api_key, self._any_key)
        if not rules:
            return f"no Kafka rule allows apiKey {name}"
        rules = tuple(r for r in rules if r.version in (None, req.api_version))
        if not rules:
            return f"no Kafka rule allows apiKey {name} version {req.api_version}"
        rules = tuple(r for r in rules if r.client in (None, req.client_id))
        if not rules:
            client = f"client ID {req.client_id!r}" if req.client_id is not None \
                else "a request without a client ID"
            return f"no Kafka rule allows apiKey {name} for {client}"
        if not req.topics:
            return (f"the topics of this apiKey {name} request are unknown (not decoded): "
                    "only a rule without a topic can allow it")
        allowed = {r.topic for r in rules}
        missing = list(dict.fromkeys(t for t in req.topics if t not in allowed))
        if len(missing) == 1:
            return f"topic {missing[0]} not allowed"
        return "topics " + ", ".join(missing) + " not allowed"


_ALLOW_ALL = KafkaMatch(True, None, "no Kafka rules: every request is allowed")
