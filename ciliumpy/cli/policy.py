"""``ciliumpy policy``: validate, import, list, get, delete, wait for and trace
Cilium-compatible network policies.

``validate`` and ``trace -f`` work offline (no agent), for CI pipelines; the policy
parser is imported inside the commands so the other commands start without it.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

import click

from ciliumpy.cli.output import api, emit_json, output_option, show_list
from ciliumpy.lookup import DPortError, parse_dport


@click.group()
def policy() -> None:
    """Cilium-compatible network policies: validate, import, list, delete, trace."""


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise click.ClickException(f"{path}: {exc.strerror}") from None


def _echo_warnings(path: str, policies: list) -> None:
    """What loads but not as written, on stderr: stdout keeps the lines scripts read."""
    for found in policies:
        for warning in found.warnings:
            click.echo(f"warning: {path}: {warning}", err=True)


HOST_POLICY_NOTE = ("a host policy (nodeSelector): enforced only by agents started with "
                    "--enable-host-firewall, on nodes whose --node-labels it selects")


def _validate_one(path: str) -> dict:
    """One file's verdict, what ``validate -o json`` prints for it: ``valid`` (loads
    as written), ``warnings`` (loads, but parts select nothing or are read otherwise
    than written: each warning says which and why) or ``refused`` (``error`` says why)."""
    from policies.parser import PolicyError, parse_text

    try:
        found = parse_text(_read(path), path)
    except (PolicyError, click.ClickException) as exc:
        error = exc.message if isinstance(exc, click.ClickException) else str(exc)
        return {"file": path, "status": "refused", "error": error, "policies": []}
    policies = [{"name": p.name, "rules": len(p.rules), "warnings": list(p.warnings) + (
        [HOST_POLICY_NOTE] if any(rule.is_host for rule in p.rules) else [])} for p in found]
    warned = any(p["warnings"] for p in policies)
    return {"file": path, "status": "warnings" if warned else "valid", "policies": policies}


@policy.command("validate")
@click.argument("files", nargs=-1, required=True)
@output_option
def policy_validate(files: tuple[str, ...], output: str) -> None:
    """Check policy files without importing them (no agent needed): per file, valid,
    valid with warnings (what loads but is not enforced as written, and why) or
    refused (why). Exit 1 if any file is refused."""
    results = [_validate_one(path) for path in files]
    refused = sum(r["status"] == "refused" for r in results)
    if output == "json":
        emit_json({"files": results, "refused": refused, "total": len(results)})
        if refused:
            raise SystemExit(1)  # the JSON is the answer; the exit status still tells
        return
    for result in results:
        if result["status"] == "refused":
            click.echo(f"refused: {result['error']}", err=True)
            continue
        found = result["policies"]
        rules = sum(p["rules"] for p in found)
        warnings = sum(len(p["warnings"]) for p in found)
        note = f", {warnings} warning{'s' if warnings != 1 else ''}" if warnings else ""
        click.echo(f"{result['file']}: valid ({len(found)} policies, {rules} rules{note})")
        for found_policy in found:
            names = f"  policy {found_policy['name']}: {found_policy['rules']} rules"
            click.echo(names)
            for warning in found_policy["warnings"]:
                click.echo(f"  warning: {warning}")
    if refused:
        raise click.ClickException(f"{refused} of {len(files)} files refused")


@policy.command("import")
@click.argument("files", nargs=-1, required=True)
@click.pass_context
def policy_import(ctx: click.Context, files: tuple[str, ...]) -> None:
    """Import (add or replace by name) policies into the cluster; prints the revision."""
    from policies.parser import PolicyError, load_documents, parse_documents

    loaded, said = {}, set()
    for path in files:  # validate every file before importing any
        try:
            documents = load_documents(_read(path))
            parsed = parse_documents(documents, path, path.rsplit("/", 1)[-1].rsplit(".", 1)[0])
            _echo_warnings(path, parsed)
            said |= {w for p in parsed for w in p.warnings}
        except PolicyError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:  # YAML errors: let the parser word them
            raise click.ClickException(f"{path}: not valid YAML/JSON ({exc})") from None
        loaded[path] = documents
    revision = 0
    for path, documents in loaded.items():
        # the agent receives the documents already loaded: no second YAML parse
        answer = api(ctx, "/v1/policy", "POST", {"documents": documents, "source": path},
                     timeout=120)
        revision = answer["revision"]
        for warning in answer.get("warnings") or ():  # what only the agent knows
            if warning not in said:  # (a named port no container declares)
                click.echo(f"warning: {path}: {warning}", err=True)
        click.echo(f"{path}: imported {', '.join(answer['policies'])}")
        local = {w for found in parse_documents(documents, path) for w in found.warnings}
        for warning in answer.get("warnings") or []:
            if warning not in local:  # what only the agent knows (its configuration)
                click.echo(f"warning: {path}: {warning}", err=True)
    click.echo(f"Revision: {revision}")


def _rule_count(document: dict) -> int:
    return len(document.get("specs") or []) + (1 if document.get("spec") else 0)


@policy.command("list")
@output_option
@click.pass_context
def policy_list(ctx: click.Context, output: str) -> None:
    """List imported policies."""
    show_list(ctx, "/v1/policy", output, ["NAME", "LABELS", "RULES", "REVISION", "SOURCE"],
              lambda p: (p["name"], ",".join(p["labels"]) or "-", _rule_count(p["document"]),
                         p["revision"], p["source"] or "-"),
              items=lambda data: data["policies"],
              footer=lambda data: [f"Revision: {data['revision']}"])


@policy.command("get")
@click.argument("name")
@click.pass_context
def policy_get(ctx: click.Context, name: str) -> None:
    """Show one policy as stored (YAML)."""
    import yaml

    data = api(ctx, f"/v1/policy/{name}")
    click.echo(yaml.safe_dump({"name": data["name"], "labels": data["labels"],
                               "revision": data["revision"], **data["document"]},
                              sort_keys=False).rstrip())


@policy.command("delete")
@click.argument("names", nargs=-1)
@click.option("--label", "labels", multiple=True, help="Delete policies with this key=value.")
@click.option("--all", "everything", is_flag=True, help="Delete every policy.")
@click.pass_context
def policy_delete(ctx: click.Context, names: tuple[str, ...], labels: tuple[str, ...],
                  everything: bool) -> None:
    """Delete policies by name, by labels, or all."""
    query = urlencode([("name", n) for n in names] + [("label", x) for x in labels]
                      + ([("all", "1")] if everything else []))
    if not query:
        raise click.UsageError("give policy names, --label or --all")
    data = api(ctx, f"/v1/policy?{query}", method="DELETE")
    click.echo(f"Deleted {', '.join(data['deleted'])}\nRevision: {data['revision']}")


@policy.command("wait")
@click.argument("revision", type=int)
@click.option("--timeout", default=30.0, show_default=True, help="Seconds.")
@click.pass_context
def policy_wait(ctx: click.Context, revision: int, timeout: float) -> None:
    """Return once this node's datapath enforces policy revision REVISION."""
    deadline = time.monotonic() + timeout
    while True:
        data = api(ctx, "/v1/policy/revision")
        if data["enforced"] >= revision:
            click.echo(f"Revision {data['enforced']} enforced")
            return
        if time.monotonic() > deadline:
            raise click.ClickException(f"revision {revision} not enforced after {timeout}s "
                                       f"(enforced: {data['enforced']}; {data['error'] or ''})")
        time.sleep(0.02)


@policy.command("trace")
@click.option("-f", "--file", "files", multiple=True,
              help="Trace against these files instead of the agent's policies.")
@click.option("--src", required=True, help="labels a=b,c=d | IP | host | world | container "
                                           "| endpoint id")
@click.option("--dst", required=True, help="same forms as --src")
@click.option("--dport", default="0", show_default=True, help="PORT[/PROTO] or icmp")
@click.option("--policy-enforcement", "mode", default="default",
              type=click.Choice(["default", "always", "never"]), show_default=True,
              help="Enforcement mode for offline traces.")
@click.option("--http-method", default=None, help="Trace this HTTP request (L7 rules).")
@click.option("--http-path", default=None, help="The request's path, e.g. /public/a.")
@click.option("--http-host", default=None, help="The request's Host.")
@click.option("--http-header", "http_headers", multiple=True, metavar="'NAME: VALUE'",
              help="A request header (repeatable).")
@click.option("--kafka-api-key", default=None, metavar="NAME|NUMBER",
              help="Trace this Kafka request (L7 rules): produce, fetch, metadata, ... or 0..")
@click.option("--kafka-api-version", default=None, type=int,
              help="The Kafka request's api version (default 0).")
@click.option("--kafka-topic", "kafka_topics", multiple=True,
              help="A topic the Kafka request names (repeatable).")
@click.option("--kafka-client-id", default=None, help="The Kafka request's client id.")
@output_option
@click.pass_context
def policy_trace(ctx: click.Context, files: tuple[str, ...], src: str, dst: str, dport: str,
                 mode: str, http_method: str | None, http_path: str | None,
                 http_host: str | None, http_headers: tuple[str, ...],
                 kafka_api_key: str | None, kafka_api_version: int | None,
                 kafka_topics: tuple[str, ...], kafka_client_id: str | None,
                 output: str) -> None:
    """Explain the verdict for a connection, rule by rule, in both directions; with
    --http-* or --kafka-* options, also the L7 proxy's verdict for that request."""
    from policies.trace import http_request, kafka_request

    try:  # checked here for both paths: a typo is reported before asking the agent
        protocol, port = parse_dport(dport)
        request = http_request(http_method, http_path, http_host, http_headers)
    except DPortError as exc:
        raise click.ClickException(f"bad --dport {dport!r}: {exc}") from None
    except ValueError as exc:
        raise click.ClickException(f"bad --http-header: {exc}") from None
    try:
        kafka = kafka_request(kafka_api_key, kafka_api_version, kafka_topics, kafka_client_id)
    except ValueError as exc:
        raise click.ClickException(f"bad --kafka-* option: {exc}") from None
    if request is not None and kafka is not None:
        raise click.ClickException("trace either an HTTP request (--http-*) or a Kafka "
                                   "request (--kafka-*), not both")
    if kafka is not None:
        request = kafka
    if files:
        from policies.parser import PolicyError, parse_text
        from policies.trace import offline_side, trace

        rules = []
        for path in files:
            try:
                rules += [r for p in parse_text(_read(path), path) for r in p.rules]
            except PolicyError as exc:
                raise click.ClickException(str(exc)) from None
        try:
            result = trace(rules, offline_side(src), offline_side(dst), protocol, port,
                           mode, request).as_dict()
        except ValueError as exc:
            raise click.ClickException(f"bad trace input: {exc}") from None
    else:  # the agent resolves --src/--dst against its endpoints, and parses --dport alike
        body = {"src": src, "dst": dst, "dport": dport}
        if kafka is not None:
            body["kafka"] = {"apiKey": kafka_api_key, "apiVersion": kafka_api_version,
                             "topics": list(kafka_topics), "clientID": kafka_client_id}
        elif request is not None:
            body["http"] = {"method": http_method, "path": http_path, "host": http_host,
                            "headers": list(http_headers)}
        result = api(ctx, "/v1/policy/trace", "POST", body)
    if output == "json":
        emit_json(result)
    else:
        click.echo("\n".join(result["log"]))
