"""A Hubble client for tests that must run inside a host's network namespace (the
multi-host harness): ``nsenter --net=... python -m tests.support.hubble_client ADDRESS
flows|nodes ...``. It uses the stub generated from Cilium's observer.proto, as the
``hubble`` CLI does, and prints one JSON object per line (flushed as it comes):

* ``flows [--number N] [--follow SECONDS] [--from-label K=V]``: each GetFlows response,
  ``{"node_name", "time", "verdict", "source_labels", "node_status"}``; with
  ``--follow`` the stream is read for that many seconds, then cancelled.
* ``nodes``: each node of GetNodes, ``{"name", "state", "address", "num_flows"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

import grpc

from ciliumpy.hubble.gen.flow import flow_pb2
from ciliumpy.hubble.gen.observer import observer_pb2, observer_pb2_grpc
from ciliumpy.hubble.gen.relay import relay_pb2


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def flows(stub: observer_pb2_grpc.ObserverStub, args: argparse.Namespace) -> None:
    request = observer_pb2.GetFlowsRequest(number=args.number, follow=args.follow > 0)
    if args.from_label:
        request.whitelist.append(flow_pb2.FlowFilter(source_label=args.from_label))
    call = stub.GetFlows(request, timeout=args.follow + 30 if args.follow else 30)
    if args.follow:
        threading.Timer(args.follow, call.cancel).start()
    try:
        for response in call:
            out: dict = {"node_name": response.node_name}
            if response.HasField("flow"):
                out.update(time=response.flow.time.ToJsonString(),
                           verdict=flow_pb2.Verdict.Name(response.flow.verdict),
                           source_labels=list(response.flow.source.labels))
            if response.HasField("node_status"):
                status = response.node_status
                out["node_status"] = {
                    "state": relay_pb2.NodeState.Name(status.state_change),
                    "nodes": list(status.node_names), "message": status.message}
            emit(out)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            raise


def nodes(stub: observer_pb2_grpc.ObserverStub, _args: argparse.Namespace) -> None:
    for node in stub.GetNodes(observer_pb2.GetNodesRequest(), timeout=30).nodes:
        emit({"name": node.name, "state": relay_pb2.NodeState.Name(node.state),
              "address": node.address, "num_flows": node.num_flows})


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("what", choices=("flows", "nodes"))
    parser.add_argument("--number", type=int, default=0)
    parser.add_argument("--follow", type=float, default=0.0)
    parser.add_argument("--from-label", action="append", default=[])
    args = parser.parse_args(argv)
    with grpc.insecure_channel(args.address) as channel:
        grpc.channel_ready_future(channel).result(timeout=20)
        stub = observer_pb2_grpc.ObserverStub(channel)
        (flows if args.what == "flows" else nodes)(stub, args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
