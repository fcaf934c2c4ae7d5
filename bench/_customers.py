"""Customers on the simulated WhatsApp network, in their own process (so their HTTP sends do not run on
the loop being measured): ``python -m bench._customers URL PLAN.json`` registers every customer phone
with the sandbox and sends each one's messages in order, all customers at once, as fast as the
network takes them — or, with ``"gap"`` (seconds) and ``"offset"``, paced: text i at
start + offset + i·gap — then prints one JSON line ``{text: when it was sent}`` (``time.perf_counter``,
CLOCK_MONOTONIC on Linux: the same clock as the measuring process's) and exits 0.

PLAN.json: ``[{"phone": "+49…", "name"?: "…", "to": "+1555…", "texts": ["…", …], "gap"?: s, "offset"?: s}]``
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp


async def run(url: str, plan: list[dict[str, Any]]) -> dict[str, float]:
    # aiohttp's client: about a third of httpx's CPU per request. On a 2-core machine the customers'
    # CPU is taken from the bridge being measured, and it is the network's side, not the bridge's work
    connector = aiohttp.TCPConnector(limit=len(plan) + 1)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        for customer in plan:
            if "name" in customer:  # a new phone on the network (without: it exists already)
                async with http.post(f"{url}/_sandbox/phones",
                                     json={"phone": customer["phone"], "name": customer["name"]}) as made:
                    made.raise_for_status()

        sent: dict[str, float] = {}
        start = time.perf_counter()

        async def post(customer: dict[str, Any], text: str) -> None:
            async with http.post(f"{url}/_sandbox/phones/{customer['phone']}/send",
                                 json={"to": customer["to"], "text": text}) as answer:
                if answer.status != 201:
                    raise RuntimeError(f"send answered {answer.status}: {await answer.text()}")
                await answer.read()

        async def sends(customer: dict[str, Any]) -> None:
            gap = customer.get("gap")
            pending = []
            for i, text in enumerate(customer["texts"]):
                if gap is None:
                    sent[text] = time.perf_counter()
                    await post(customer, text)
                    continue
                delay = start + customer.get("offset", 0.0) + i * gap - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent[text] = time.perf_counter()
                pending.append(asyncio.ensure_future(post(customer, text)))
            await asyncio.gather(*pending)

        await asyncio.gather(*(sends(c) for c in plan))
        return sent


def main() -> int:
    url, plan_path = sys.argv[1], Path(sys.argv[2])
    sent: dict[str, float] = asyncio.run(run(url, json.loads(plan_path.read_text("utf-8"))))
    sent["_cpu_seconds"] = time.process_time()  # bench/_common.CPU_KEY: what the customers cost the machine
    print(json.dumps(sent), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
