#!/usr/bin/env python3
"""Follows a fedpeg node's block feed with a stock gRPC client.

The client is generated here, at run time, by grpcio-tools from the
project's .proto files (fedpeg wrote none of it). It subscribes from height
0, drops the connection every few blocks (cancels the call and closes the
channel), reconnects with SubscribeBlocks(from_height = last + 1), and
checks that the heights it received are 1, 2, 3, ... with no gap and no
duplicate. It stops once it has a block at or above the height written to
--until-file (the driving test writes it when its transfers are final).

Prints one JSON object: first/last height, blocks, reconnects, and the
transfers (txids) seen in the feed's events. Exits 1 with a message on a
gap, a duplicate, or a malformed message.
"""

import argparse
import json
import os
import sys
import tempfile
import time


def generate_stubs(proto_dir, out_dir):
    from grpc_tools import protoc

    rc = protoc.main(
        [
            "grpc_tools.protoc",
            "-I",
            proto_dir,
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            "fedpeg/v1/types.proto",
            "fedpeg/v1/api.proto",
        ]
    )
    if rc != 0:
        sys.exit(f"grpc_tools.protoc failed with {rc}")
    sys.path.insert(0, out_dir)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--target", required=True, help="host:port of the node's gRPC API")
    ap.add_argument("--proto-dir", required=True, help="folder holding fedpeg/v1/*.proto")
    ap.add_argument("--until-file", required=True, help="file the target height is written to")
    ap.add_argument("--reconnect-every", type=int, default=7, help="blocks per connection")
    ap.add_argument("--timeout", type=float, default=180, help="seconds before giving up")
    a = ap.parse_args()

    out = tempfile.mkdtemp(prefix="fedpeg-stubs-")
    generate_stubs(a.proto_dir, out)
    import grpc
    from fedpeg.v1 import api_pb2, api_pb2_grpc

    deadline = time.time() + a.timeout
    heights = []
    transfers = []
    reconnects = 0
    target = None
    next_height = 0
    while True:
        if time.time() > deadline:
            sys.exit(f"timed out at height {heights[-1] if heights else 0}, target {target}")
        channel = grpc.insecure_channel(a.target)
        stub = api_pb2_grpc.ExplorerServiceStub(channel)
        call = stub.SubscribeBlocks(api_pb2.SubscribeBlocksRequest(from_height=next_height))
        got = 0
        try:
            for block in call:
                if heights and block.height != heights[-1] + 1:
                    sys.exit(f"gap or duplicate: height {block.height} after {heights[-1]}")
                if not heights and block.height != 1:
                    sys.exit(f"first block has height {block.height}, expected 1")
                heights.append(block.height)
                for ev in block.events:
                    if ev.WhichOneof("event") == "transfer":
                        transfers.append(ev.txid)
                    if ev.height != block.height:
                        sys.exit(f"event of height {ev.height} in block {block.height}")
                got += 1
                if target is None and os.path.exists(a.until_file):
                    text = open(a.until_file).read().strip()
                    if text:
                        target = int(text)
                if target is not None and heights[-1] >= target:
                    break
                if got >= a.reconnect_every:
                    break
        except grpc.RpcError as e:
            sys.exit(f"stream failed: {e.code()} {e.details()}")
        finally:
            # Drop the connection mid-stream, as a crashed explorer would.
            call.cancel()
            channel.close()
        if target is not None and heights and heights[-1] >= target:
            break
        reconnects += 1
        next_height = heights[-1] + 1 if heights else 0
        time.sleep(0.05 * (reconnects % 4))

    if heights != list(range(1, len(heights) + 1)):
        sys.exit("heights are not contiguous from 1")
    if len(set(transfers)) != len(transfers):
        sys.exit("a transfer appeared twice in the feed")
    print(
        json.dumps(
            {
                "first": heights[0],
                "last": heights[-1],
                "blocks": len(heights),
                "reconnects": reconnects,
                "transfers": transfers,
            }
        )
    )


if __name__ == "__main__":
    main()
