"""Kafka rule semantics (policies.kafka_rules), as Cilium's MatchesRule: the seed
example, multi-topic requests, exact version and client id, names and case, invalid
rules, and properties checked on random rule sets against a plain transcription of
Cilium's loop."""

from __future__ import annotations

import random

import pytest

from policies.kafka_rules import (
    API_KEYS,
    API_NAMES,
    ROLES,
    TOPIC_API_KEYS,
    KafkaRequest,
    KafkaRuleError,
    KafkaRuleSet,
    api_key_name,
    parse_api_key,
)

PRODUCE, FETCH, OFFSETS, METADATA, HEARTBEAT, API_VERSIONS, CREATE_TOPICS = 0, 1, 2, 3, 12, 18, 19
SERVICE1 = [{"role": "produce", "topic": "topic1"}]  # the seed example
SERVICE2 = [{"role": "consume", "topic": "topic1"}]


def req(key: int, topics=None, version: int = 0, client: str | None = None) -> KafkaRequest:
    return KafkaRequest(key, version, client, None if topics is None else tuple(topics))


def test_names_and_roles_are_ciliums():
    assert API_KEYS["produce"] == 0 and API_KEYS["metadata"] == 3
    assert API_KEYS["apiversions"] == 18 and API_KEYS["alterconfigs"] == 33
    assert len(API_KEYS) == 34 and list(API_KEYS.values()) == list(range(34))
    assert all(API_NAMES[n] == name for name, n in API_KEYS.items())
    assert ROLES["produce"] == {0, 3, 18}
    assert ROLES["consume"] == {1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18}
    assert api_key_name(1) == "fetch" and api_key_name(47) == "47"


@pytest.mark.parametrize(("text", "key"), [
    ("produce", 0), ("Fetch", 1), (" METADATA ", 3), ("apiversions", 18), ("18", 18),
    ("47", 47), ("0", 0),
])
def test_parse_api_key(text, key):
    assert parse_api_key(text) == key


@pytest.mark.parametrize(("text", "message"), [
    ("prodce", "did you mean 'produce'"), ("-1", "unknown Kafka apiKey '-1'"),
    ("40000", "0..32767"), ("", "unknown Kafka apiKey"),
])
def test_parse_api_key_refuses_clearly(text, message):
    with pytest.raises(ValueError, match=message):
        parse_api_key(text)


@pytest.mark.parametrize(("rules", "kreq", "allowed"), [
    # the seed example: service1 produces to topic1 only
    (SERVICE1, req(PRODUCE, ["topic1"]), True),
    (SERVICE1, req(FETCH, ["topic1"]), False),
    (SERVICE1, req(PRODUCE, ["topic2"]), False),
    (SERVICE1, req(METADATA, []), True),  # no topics: key/version/client decide
    (SERVICE1, req(METADATA, ["topic1"]), True),
    (SERVICE1, req(METADATA, ["topic2"]), False),
    (SERVICE1, req(API_VERSIONS), True),
    (SERVICE1, req(HEARTBEAT), False),  # not in the produce role
    (SERVICE1, req(PRODUCE, ["topic1", "topic2"]), False),
    # service2 consumes topic1: the group protocol is in the role, topic-free
    (SERVICE2, req(FETCH, ["topic1"]), True),
    (SERVICE2, req(OFFSETS, ["topic1"]), True),
    (SERVICE2, req(HEARTBEAT), True),
    (SERVICE2, req(10), True),  # findcoordinator
    (SERVICE2, req(PRODUCE, ["topic1"]), False),
    (SERVICE2, req(FETCH, ["topic2"]), False),
    # topics not decoded for a type that carries topics: only topic-free rules allow
    (SERVICE1, req(PRODUCE, None), False),
    ([{"role": "produce"}], req(PRODUCE, None), True),
    ([{"apiKey": "createtopics", "topic": "a"}], req(CREATE_TOPICS, None), False),
    # multi-topic: every topic covered by some rule, possibly different ones
    ([{"topic": "a"}, {"topic": "b"}], req(PRODUCE, ["a", "b"]), True),
    ([{"topic": "b"}, {"apiKey": "produce", "topic": "a"}], req(PRODUCE, ["a", "b", "a"]), True),
    ([{"topic": "a"}, {"topic": "c"}], req(PRODUCE, ["a", "b"]), False),
    ([{"topic": "a"}, {"apiKey": "fetch", "topic": "b"}], req(PRODUCE, ["a", "b"]), False),
    ([{"topic": "a"}, {"apiKey": "produce"}], req(PRODUCE, ["a", "b"]), True),  # no topic: any
    # apiVersion and clientID are exact
    ([{"apiKey": "produce", "apiVersion": "3"}], req(PRODUCE, ["x"], version=3), True),
    ([{"apiKey": "produce", "apiVersion": "3"}], req(PRODUCE, ["x"], version=4), False),
    ([{"apiKey": "produce", "apiVersion": 3}], req(PRODUCE, ["x"], version=3), True),
    ([{"clientID": "svc"}], req(FETCH, ["x"], client="svc"), True),
    ([{"clientID": "svc"}], req(FETCH, ["x"], client="svc2"), False),
    ([{"clientID": "svc"}], req(FETCH, ["x"], client="SVC"), False),
    ([{"clientID": "svc"}], req(HEARTBEAT, client=None), False),
    ([{"clientID": "svc", "topic": "t"}, {"topic": "u"}], req(FETCH, ["t", "u"], client="x"),
     False),
    # names, case, empty fields
    ([{"role": "PRODUCE", "topic": "topic1"}], req(PRODUCE, ["topic1"]), True),
    ([{"apiKey": "Fetch"}], req(FETCH, ["x"]), True),
    ([{"apiKey": "fetch"}], req(PRODUCE, ["x"]), False),
    ([{"apiKey": "apiversions"}], req(API_VERSIONS), True),
    ([{"role": "", "apiKey": "", "apiVersion": "", "clientID": "", "topic": ""}],
     req(47, ["x"], version=9, client="c"), True),
    ([{}], req(PRODUCE, ["anything"]), True),  # a rule with no fields allows all
    (None, req(PRODUCE, ["anything"]), True),  # no rules: allow all
    ([], req(99, None), True),  # kafka: [] is no L7 rule at all (see KafkaRuleSet)
    # topics are exact strings
    ([{"topic": "topic1"}], req(PRODUCE, ["Topic1"]), False),
])
def test_match(rules, kreq, allowed):
    assert KafkaRuleSet(rules).match(kreq).allowed is allowed


def test_match_names_the_rule_and_the_reason():
    rules = KafkaRuleSet([{"apiKey": "fetch"}, {"topic": "a"}, {"role": "produce", "topic": "b"}])
    found = rules.match(req(PRODUCE, ["a", "b"]))
    assert (found.allowed, found.rule_index) == (True, 2)  # the last one needed
    assert "rule #2" in found.reason
    assert rules.match(req(FETCH, ["z"])).rule_index == 0
    assert rules.match(req(PRODUCE, ["a"])).reason == "allowed by Kafka rule #1"
    assert rules.match(req(PRODUCE, ["a", "c"])).reason == "topic c not allowed"
    assert rules.match(req(PRODUCE, ["d", "a", "c"])).reason == "topics d, c not allowed"
    seed = KafkaRuleSet(SERVICE1)
    assert seed.match(req(FETCH, ["topic1"])).reason == "no Kafka rule allows apiKey fetch"
    assert seed.match(req(PRODUCE, ["topic2"])) == \
        type(found)(False, None, "topic topic2 not allowed")
    assert "not decoded" in seed.match(req(PRODUCE, None)).reason
    versioned = KafkaRuleSet([{"apiKey": "produce", "apiVersion": "3", "clientID": "c"}])
    assert versioned.match(req(PRODUCE, version=2)).reason == \
        "no Kafka rule allows apiKey produce version 2"
    assert versioned.match(req(PRODUCE, version=3, client="d")).reason == \
        "no Kafka rule allows apiKey produce for client ID 'd'"
    assert "without a client ID" in versioned.match(req(PRODUCE, version=3)).reason
    assert KafkaRuleSet([{"apiKey": "fetch"}]).match(req(47)).reason == \
        "no Kafka rule allows apiKey 47"


def test_needs_topics():
    assert KafkaRuleSet(SERVICE1).needs_topics
    assert not KafkaRuleSet([{"role": "produce"},
                             {"apiKey": "fetch", "clientID": "c"}]).needs_topics
    assert not KafkaRuleSet(None).needs_topics and not KafkaRuleSet([]).needs_topics


@pytest.mark.parametrize(("rules", "message"), [
    ([{"role": "produce", "apiKey": "fetch"}], "Kafka rule #0: role and apiKey cannot be combined"),
    ([{}, {"role": "publish"}], "Kafka rule #1 role: 'publish' is not produce or consume"),
    ([{"apiKey": "fetsh"}], "unknown Kafka apiKey 'fetsh' (did you mean 'fetch'?)"),
    ([{"apiKey": "0"}], "unknown Kafka apiKey '0'"),  # names only in rules, as Cilium
    ([{"apiVersion": "-1"}], "apiVersion '-1' is not an integer 0..32767"),
    ([{"apiVersion": "40000"}], "apiVersion '40000' is not an integer 0..32767"),
    ([{"apiVersion": "v1"}], "apiVersion 'v1' is not an integer"),
    ([{"topic": "a/b"}], "'a/b' is not a valid Kafka topic"),
    ([{"topic": "x" * 256}], "is not a valid Kafka topic"),
    ([{"topics": "a"}], "unknown field 'topics' in a Kafka rule (did you mean 'topic'?)"),
    ([{"role": ["produce"]}], "role must be a string, not list"),
    (["produce"], "a Kafka rule must be a mapping, not str"),
    ({"role": "produce"}, "Kafka rules must be a list, not dict"),
])
def test_invalid_rules_are_refused_clearly(rules, message):
    with pytest.raises(KafkaRuleError) as info:
        KafkaRuleSet(rules)
    assert message in str(info.value)


def test_the_parser_validates_with_the_same_code():
    from policies.parser import PolicyError, parse_text

    text = """
endpointSelector: {}
ingress:
- toPorts:
  - ports: [{port: "9092", protocol: TCP}]
    rules: {kafka: [%s]}
"""
    parse_text(text % "{role: Produce, topic: t.1_x-y}, {apiKey: FETCH, apiVersion: '4'}")
    for bad, where in (("{apiVersion: '99999'}", "kafka[0].apiVersion"),
                       ("{apiKey: prduce}", "kafka[0].apiKey"),
                       ("{topic: 'a b'}", "kafka[0].topic")):
        with pytest.raises(PolicyError, match=where.replace("[", r"\[").replace("]", r"\]")):
            parse_text(text % bad)


# --- properties, on random rule sets (hypothesis is not installed: a seeded generator) ---

TOPICS = ("a", "b", "c")
KEYS = (0, 1, 3, 12, 18, 19, 47)


def _random_rule(rng: random.Random) -> dict:
    rule: dict = {}
    pick = rng.random()
    if pick < 0.3:
        rule["role"] = rng.choice(("produce", "consume"))
    elif pick < 0.6:
        rule["apiKey"] = api_key_name(rng.choice(KEYS[:-1]))
    if rng.random() < 0.2:
        rule["apiVersion"] = str(rng.choice((0, 1)))
    if rng.random() < 0.2:
        rule["clientID"] = rng.choice(("x", "y"))
    if rng.random() < 0.6:
        rule["topic"] = rng.choice(TOPICS)
    return rule


def _random_request(rng: random.Random) -> KafkaRequest:
    topics = rng.choice((None, (), *(tuple(rng.sample(TOPICS, n)) for n in (1, 2, 3))))
    return KafkaRequest(rng.choice(KEYS), rng.choice((0, 1)), rng.choice((None, "x", "y")),
                        topics)


def _cilium(rules: list[dict], request: KafkaRequest) -> bool:
    """Cilium's MatchesRule (pkg/kafka/request.go) transcribed as plainly as possible;
    ``topics is None`` for a type that carries topics is an undecoded body, which
    matchNonTopicRequests refuses for rules with a topic."""
    def keys(rule: dict) -> set[int] | None:
        if rule.get("role"):
            return set(ROLES[rule["role"].lower()])
        return {API_KEYS[rule["apiKey"].lower()]} if rule.get("apiKey") else None

    def rule_matches(rule: dict) -> bool:
        wanted = keys(rule)
        if wanted is not None and request.api_key not in wanted:
            return False
        if rule.get("apiVersion") and int(rule["apiVersion"]) != request.api_version:
            return False
        if rule.get("clientID") and rule["clientID"] != request.client_id:
            return False
        undecoded = request.topics is None and request.api_key in TOPIC_API_KEYS
        return not (rule.get("topic") and undecoded)

    topics = list(request.topics or ())
    remaining = set(topics)
    for rule in rules:
        if not rule.get("topic") or not topics:
            if rule_matches(rule):
                return True
        elif rule["topic"] in remaining and rule_matches(rule):
            remaining.discard(rule["topic"])
            if not remaining:
                return True
    return False


def _cases(count: int, seed: int):
    rng = random.Random(seed)
    for _ in range(count):
        rules = [_random_rule(rng) for _ in range(rng.randint(1, 5))]
        yield rng, rules, _random_request(rng)


def test_agrees_with_ciliums_loop_on_random_rule_sets():
    for _, rules, request in _cases(3000, 1):
        assert KafkaRuleSet(rules).match(request).allowed == _cilium(rules, request), \
            (rules, request)


def test_adding_a_rule_never_denies_what_was_allowed():
    for rng, rules, request in _cases(3000, 2):
        before = KafkaRuleSet(rules).match(request).allowed
        extra = _random_rule(rng)
        at = rng.randint(0, len(rules))
        after = KafkaRuleSet(rules[:at] + [extra] + rules[at:]).match(request).allowed
        assert after or not before, (rules, extra, request)


def test_rule_order_does_not_change_the_verdict():
    for rng, rules, request in _cases(2000, 3):
        shuffled = rules[:]
        rng.shuffle(shuffled)
        assert KafkaRuleSet(rules).match(request).allowed == \
            KafkaRuleSet(shuffled).match(request).allowed, (rules, request)


def test_the_deciding_rule_accepts_key_version_and_client():
    for _, rules, request in _cases(2000, 4):
        found = KafkaRuleSet(rules).match(request)
        if not found.allowed:
            continue
        rule = rules[found.rule_index]
        assert _cilium([{k: v for k, v in rule.items() if k != "topic"}], request)
