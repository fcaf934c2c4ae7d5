"""Clicking through the sandbox's consent page without a browser (headless sandbox mode).

The real OAuth loopback flow runs unchanged; only the person clicking a location on the consent page
is replaced by an HTTP client that loads the page, follows the chosen "approve" link and delivers the
302 redirect to the app's loopback listener — exactly what a browser would do.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from typing import Any

import httpx

from ghl_desktop.adapters.ghl.tls import ssl_context_async
from ghl_desktop.core.tasks import BackgroundTasks

log = logging.getLogger("ghl.sandbox.consent")

_APPROVE_LINK = re.compile(r'href="([^"]*approve[^"]*)"')


def approve_links(page: str) -> list[str]:
    return [html.unescape(link) for link in _APPROVE_LINK.findall(page)]


class ConsentClicker:
    """An ``open_url`` for :class:`~ghl_desktop.adapters.ghl.oauth.OAuthConnector`: picks the location
    at ``index`` (or the one with ``location_id``) on the sandbox consent page."""

    def __init__(self, *, index: int = 0, location_id: str | None = None) -> None:
        self.index = index
        self.location_id = location_id
        self._tasks = BackgroundTasks(log, "sandbox consent click", on_error=self._failed)
        self.error: BaseException | None = None

    def __call__(self, url: str) -> bool:
        self._tasks.spawn(self._visit(url))
        return True

    def _failed(self, _task: asyncio.Task[Any], error: BaseException) -> None:
        self.error = error

    async def _visit(self, url: str) -> None:
        async with httpx.AsyncClient(follow_redirects=False, timeout=30, verify=await ssl_context_async()) as http:
            consent = await http.get(url)
            consent.raise_for_status()
            links = [link for link in approve_links(consent.text) if "locationId=" in link]
            if self.location_id is not None:
                links = [link for link in links if f"locationId={self.location_id}" in link]
            if not links:
                raise RuntimeError("the sandbox consent page lists no location to approve")
            approve = await http.get(httpx.URL(url).join(links[min(self.index, len(links) - 1)]))
            if approve.status_code != 302:
                raise RuntimeError(f"approving on the sandbox consent page answered {approve.status_code}")
            await http.get(approve.headers["location"])
