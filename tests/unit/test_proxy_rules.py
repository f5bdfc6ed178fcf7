"""policies.http_rules (pure): Cilium HTTP rule semantics, the header-regex extension,
headerMatches mismatch actions, and the cost of 1 vs 1000 rules."""

from __future__ import annotations

import time

import pytest

from policies.http_rules import Action, Request, RuleError, RuleSet


def req(method="GET", path="/", host=None, headers=None) -> Request:  # noqa: ANN001
    return Request(method, path, host, [(n.lower(), v) for n, v in (headers or [])])


def allowed(rules, r: Request) -> bool:  # noqa: ANN001
    return RuleSet(rules).match(r).allowed


@pytest.mark.parametrize(("rules", "request_", "ok"), [
    ([{"method": "GET", "path": "/public/.*"}], req(path="/public/a"), True),
    ([{"method": "GET", "path": "/public/.*"}], req("POST", "/public/a"), False),
    ([{"method": "GET", "path": "/public/.*"}], req(path="/private"), False),
    ([{"path": "/public"}], req(path="/public"), True),
    ([{"path": "/public"}], req(path="/public/a"), False),  # full match, not prefix
    ([{"path": "/public"}], req(path="/public?x=1"), False),  # query is part of :path
    ([{"path": "/a/b"}], req(path="/xa/b"), False),
    ([{"method": "GET|HEAD"}], req("HEAD", "/x"), True),
    ([{"method": "GET|HEAD"}], req("GETX", "/x"), False),  # ^(?:GET|HEAD)$, not ^GET|HEAD$
    ([{"method": "get"}], req("GET"), False),  # methods are case-sensitive
    ([{"host": "api\\.example\\.com"}], req(host="API.Example.com"), True),
    ([{"host": "api\\.example\\.com"}], req(host="api.example.com.evil"), False),
    ([{"host": "api\\.example\\.com"}], req(host=None), False),
    ([{}], req("DELETE", "/anything"), True),
    (None, req("DELETE", "/anything"), True),
    ([{"path": "/a"}, {"path": "/b/.*"}], req(path="/b/c"), True),  # rules are ORed
    ([{"method": "POST", "path": "/b/.*"}], req("GET", "/b/c"), False),  # fields ANDed
    ([{"path": "/pkg.Service/Allowed"}], req("POST", "/pkg.Service/Allowed"), True),
    ([{"path": "/pkg.Service/Allowed"}], req("POST", "/pkg.Service/Other"), False),
])
def test_basic_semantics(rules, request_, ok):
    assert allowed(rules, request_) is ok


@pytest.mark.parametrize(("spec", "headers", "ok"), [
    ("X-Token: [0-9]+", [("X-Token", "42")], True),
    ("X-Token: [0-9]+", [("X-Token", "abc")], False),
    ("X-Token: [0-9]+", [("X-Token", "42abc")], False),  # full match
    ("X-Token: [0-9]+", [], False),
    ("X-Token: secret", [("x-token", "secret")], True),  # literal: names case-insensitive
    ("X-Token: secret", [("X-Token", "Secret")], False),  # values case-sensitive
    ("X-Token: secret", [("X-Token", "secret2")], False),
    ("X-Token: a b", [("X-Token", "a b")], True),  # split on the first space only
    ("X-Token", [("X-Token", "")], True),  # presence only
    ("X-Token", [], False),
    ("X-Token:", [("X-Token", "x")], True),
    ("X-Ver: 1.0", [("X-Ver", "1.0")], True),  # '.' is a metachar: regex, still matches
    ("X-Ver: 1.0", [("X-Ver", "1x0")], True),  # ... and as a regex '.' matches any char
    ("X-Bad: a(b", [("X-Bad", "a(b")], True),  # does not compile: literal
    ("X-Multi: ok", [("X-Multi", "no"), ("X-Multi", "ok")], True),
])
def test_headers_literal_or_regex(spec, headers, ok):
    assert allowed([{"headers": [spec]}], req(headers=headers)) is ok


def test_header_matches_mismatch_actions():
    rules = [{"headerMatches": [{"name": "X-Must", "value": "yes"}]}]
    assert allowed(rules, req(headers=[("X-Must", "yes")]))
    assert not allowed(rules, req(headers=[("X-Must", "no")]))
    assert not allowed(rules, req())
    assert not allowed([{"headerMatches": [{"name": "X-P"}]}], req())
    assert allowed([{"headerMatches": [{"name": "X-P"}]}], req(headers=[("X-P", "")]))
    # a secret the agent did not resolve into a value never matches (fail closed)
    assert not allowed([{"headerMatches": [{"name": "X-S", "secret": {"name": "s"}}]}],
                       req(headers=[("X-S", "v")]))
    for kind in ("LOG", "ADD", "DELETE", "REPLACE"):
        rs = RuleSet([{"headerMatches": [{"name": "X-H", "value": "v", "mismatch": kind}]}])
        m = rs.match(req(headers=[("X-H", "other")]))
        assert m.allowed and m.actions == [Action(kind, "x-h", "v")]
        m = rs.match(req(headers=[("X-H", "v")]))
        assert m.allowed and m.actions == []
    # headerMatches values are literal even with metacharacters
    assert not allowed([{"headerMatches": [{"name": "X-H", "value": "[0-9]+"}]}],
                       req(headers=[("X-H", "42")]))


def test_invalid_rules_rejected():
    with pytest.raises(RuleError):
        RuleSet([{"path": "/a(("}])
    with pytest.raises(RuleError):
        RuleSet([{"headerMatches": [{"name": "x", "mismatch": "EXPLODE"}]}])


def test_first_matching_rule_decides_actions():
    rs = RuleSet([{"path": "/a", "headerMatches": [{"name": "X", "value": "1",
                                                    "mismatch": "ADD"}]},
                  {"path": "/a"}])
    assert rs.match(req(path="/a")).rule_index == 0


def test_candidates_are_the_rules_whose_path_matches():
    rs = RuleSet([{"path": "/api/.*"}, {"path": "/exact"}, {"path": ".*/x"}, {}])
    assert [r.index for r in rs.candidates("/api/x")] == [0, 2, 3]  # 3: no path = any
    assert [r.index for r in rs.candidates("/exact")] == [1, 3]


def _time(rs: RuleSet, requests: list[Request], n: int = 10_000) -> float:
    start = time.perf_counter()
    for i in range(n):
        rs.match(requests[i % len(requests)])
    return time.perf_counter() - start


def test_1000_rules_cost_about_what_1_costs():
    one = RuleSet([{"method": "GET", "path": "/svc0/.*"}])
    many = RuleSet([{"method": "GET", "path": f"/svc{i}/.*"} for i in range(500)]
                   + [{"method": "POST", "path": f"/exact/{i}"} for i in range(500)])
    reqs_one = [req(path="/svc0/items/1"), req(path="/nope/x")]
    reqs_many = [req(path="/svc499/items/1"), req(path="/nope/x"),
                 req("POST", "/exact/499")]
    assert all(many.match(r).allowed for r in (reqs_many[0], reqs_many[2]))
    assert not many.match(reqs_many[1]).allowed
    t1 = min(_time(one, reqs_one) for _ in range(3))
    t1000 = min(_time(many, reqs_many) for _ in range(3))
    print(f"10k matches: 1 rule {t1 * 1e3:.1f} ms, 1000 rules {t1000 * 1e3:.1f} ms")
    assert t1000 < 3 * t1 + 0.02


def test_1000_regex_rules_without_literal_prefix_cost_about_what_1_costs():
    """The worst case for an index by literal prefix: every rule an alternation, the
    matching one last."""
    one = RuleSet([{"method": "GET", "path": "(/x|/bench)/.*"}])
    many = RuleSet([{"method": "GET", "path": f"(/x{i}|/y{i})/.*"} for i in range(999)]
                   + [{"method": "GET", "path": "(/x|/bench)/.*"}])
    reqs = [req(path="/bench/items/1"), req(path="/nope/x")]
    assert many.match(reqs[0]).allowed and not many.match(reqs[1]).allowed
    t1 = min(_time(one, reqs) for _ in range(3))
    t1000 = min(_time(many, reqs) for _ in range(3))
    print(f"10k matches: 1 rule {t1 * 1e3:.1f} ms, 1000 regex rules {t1000 * 1e3:.1f} ms")
    assert t1000 < 2 * t1 + 0.01


def test_paths_re2_cannot_compile_are_refused():
    with pytest.raises(RuleError, match="RE2"):
        RuleSet([{"path": "(a)\\1"}])
