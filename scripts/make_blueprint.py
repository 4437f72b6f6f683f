"""Build the subgraph blueprint subgraphs/talker_text_to_talking_video.json from the "1 Text to talking video" template.

ComfyUI cores that offer subgraph blueprints (0.28 lists ``custom_nodes/*/subgraphs/*.json`` in the
node library) show it as one node, "Text to Talking Video (Talker-T2AV)": a voice recording and a face
image in, the talking video out, with the text, seed and length on the node. Older cores ignore the
folder. The inner graph is the template's, so the two cannot drift apart: rerun this after editing
example_workflows/1 Text to talking video.json (tests/test_pack_polish.py checks that they match).

Usage: python scripts/make_blueprint.py
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "example_workflows" / "1 Text to talking video.json"
OUT = ROOT / "subgraphs" / "talker_text_to_talking_video.json"
NAME = "Text to Talking Video (Talker-T2AV)"
DESCRIPTION = (
    "Text, a reference voice and a face photo in; a lip-synced talking-face video with the cloned voice "
    "out (Talker-T2AV: speech and motion generated together, 512×512 at 25 fps)."
)
# Template nodes that become the blueprint's inputs and output instead of staying inside it.
INPUT_NODES = {"LoadAudio": ("voice", "AUDIO"), "LoadImage": ("face", "IMAGE")}
OUTPUT_NODE = "SaveVideo"
DROPPED = {"MarkdownNote", "Note"}
PROMOTED = [("TalkerSampler", "text"), ("TalkerSampler", "seed"), ("TalkerSampler", "max_seconds")]


def build(template: dict) -> dict:
    sg_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "talker-t2av/blueprint/text-to-talking-video"))
    nodes = {n["id"]: n for n in template["nodes"]}
    by_type = {n["type"]: n for n in template["nodes"]}
    inner = [copy.deepcopy(n) for n in template["nodes"] if n["type"] not in DROPPED | set(INPUT_NODES) | {OUTPUT_NODE}]
    keep = {n["id"] for n in inner}
    inputs, outputs, sg_links = [], [], []
    for link_id, src, src_slot, dst, dst_slot, ltype in template["links"]:
        if src in keep and dst in keep:
            sg_links.append(
                {
                    "id": link_id,
                    "origin_id": src,
                    "origin_slot": src_slot,
                    "target_id": dst,
                    "target_slot": dst_slot,
                    "type": ltype,
                }
            )
        elif nodes[src]["type"] in INPUT_NODES and dst in keep:
            name, itype = INPUT_NODES[nodes[src]["type"]]
            inputs.append(
                {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{sg_id}/in/{name}")),
                    "name": name,
                    "type": itype,
                    "linkIds": [link_id],
                    "localized_name": name,
                }
            )
            sg_links.append(
                {
                    "id": link_id,
                    "origin_id": -10,
                    "origin_slot": len(inputs) - 1,
                    "target_id": dst,
                    "target_slot": dst_slot,
                    "type": ltype,
                }
            )
        elif nodes[dst]["type"] == OUTPUT_NODE and src in keep and ltype == "VIDEO":
            outputs.append(
                {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{sg_id}/out/video")),
                    "name": "video",
                    "type": "VIDEO",
                    "linkIds": [link_id],
                    "localized_name": "video",
                }
            )
            sg_links.append(
                {
                    "id": link_id,
                    "origin_id": src,
                    "origin_slot": src_slot,
                    "target_id": -20,
                    "target_slot": 0,
                    "type": ltype,
                }
            )
    for n in inner:  # outputs that led to dropped nodes keep only the links that stay
        for o in n.get("outputs", []):
            o["links"] = [lid for lid in (o.get("links") or []) if any(sl["id"] == lid for sl in sg_links)]
    for i, inp in enumerate(inputs):
        inp["pos"] = [260, 110 + 20 * i]
    outputs[0]["pos"] = [2210, 110]
    assert [i["name"] for i in inputs] == ["voice", "face"] and len(outputs) == 1, (inputs, outputs)
    xs = [n["pos"][0] for n in inner]
    sampler = by_type["TalkerSampler"]
    outer = {
        "id": 1,
        "type": sg_id,
        "pos": [0, 0],
        "size": [400, 260],
        "flags": {},
        "order": 0,
        "mode": 0,
        "inputs": [{"localized_name": i["name"], "name": i["name"], "type": i["type"], "link": None} for i in inputs],
        "outputs": [{"localized_name": "video", "name": "video", "type": "VIDEO", "links": []}],
        "properties": {"proxyWidgets": [[str(sampler["id"]), w] for t, w in PROMOTED]},
        "widgets_values": [],
        "title": NAME,
    }
    return {
        "revision": 0,
        "last_node_id": 1,
        "last_link_id": 0,
        "nodes": [outer],
        "links": [],
        "version": 0.4,
        "definitions": {
            "subgraphs": [
                {
                    "id": sg_id,
                    "version": 1,
                    "state": {
                        "lastGroupId": 0,
                        "lastNodeId": max(keep),
                        "lastLinkId": template["last_link_id"],
                        "lastRerouteId": 0,
                    },
                    "revision": 0,
                    "config": {},
                    "name": NAME,
                    "inputNode": {"id": -10, "bounding": [min(xs) - 220, 60, 120, 80]},
                    "outputNode": {"id": -20, "bounding": [max(xs) + 460, 60, 120, 60]},
                    "inputs": inputs,
                    "outputs": outputs,
                    "widgets": [],
                    "nodes": inner,
                    "groups": [],
                    "links": sg_links,
                    "extra": {},
                    "category": "Talker-T2AV",
                    "description": DESCRIPTION,
                }
            ]
        },
        "extra": {"BlueprintDescription": DESCRIPTION},
    }


def main() -> None:
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(build(json.loads(TEMPLATE.read_text())), indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
