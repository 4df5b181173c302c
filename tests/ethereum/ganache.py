"""A real Ethereum node for end-to-end tests: ganache (pinned in node/package.json), run as a
subprocess on loopback and driven over JSON-RPC from Trio.

ganache serves HTTP JSON-RPC and WebSocket JSON-RPC (``eth_subscribe``) on one port, on the path
``/`` only (any other WebSocket path is refused with 400). Blocks are mined on demand: each
transaction is mined at once into its own block (instamine "eager") and ``mine()`` mines an empty
one; there is no automatic block time unless asked for. The chain lives in ``db_path``, so a
``restart()`` on the same port and directory keeps it (verified with ganache 7.9.2, also after a
SIGKILL).

Install it with ``npm ci --prefix tests/ethereum/node`` (``nox -s tests`` does it).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Literal, Self

import httpx
import trio
import trio.lowlevel

NODE_DIR: Final = Path(__file__).resolve().parent / "node"
GANACHE: Final = NODE_DIR / "node_modules" / ".bin" / "ganache"
INSTALL_COMMAND: Final = "npm ci --prefix tests/ethereum/node"
HOST: Final = "127.0.0.1"
CHAIN_ID: Final = 1337

# The emitter: a contract with no source, hand-assembled. On any call its runtime emits one LOG1
# whose only topic is EMITTER_TOPIC and whose data is the call data, as is (not ABI-encoded).
# EMITTER_TOPIC is keccak256("Ping(bytes)"), checked against the node in the smoke tests.
# Stacks are written top first.
EMITTER_RUNTIME: Final = bytes.fromhex(
    "36"  # CALLDATASIZE        n                the call data's length
    "6000"  # PUSH1 0           0 n              offset in the call data
    "6000"  # PUSH1 0           0 0 n            offset in memory
    "37"  # CALLDATACOPY        (empty)          memory[0:n] = calldata[0:n]
    "7fe2a96e1a3428f4df324a6e38e2a9639c4553be71ecb6dc55cf078ec326e54c8e"  # PUSH32 topic
    "36"  # CALLDATASIZE        n topic          log data length
    "6000"  # PUSH1 0           0 n topic        log data offset in memory
    "a1"  # LOG1                (empty)          log(memory[0:n], topic)
    "00"  # STOP
)
EMITTER_TOPIC: Final = "0x" + EMITTER_RUNTIME[7:39].hex()
_EMITTER_CONSTRUCTOR: Final = bytes.fromhex(
    "602c"  # PUSH1 44          44               the runtime's length
    "80"  # DUP1                44 44
    "600b"  # PUSH1 11          11 44 44         the runtime's offset: after these 11 bytes
    "6000"  # PUSH1 0           0 11 44 44       offset in memory
    "39"  # CODECOPY            44               memory[0:44] = code[11:55]
    "6000"  # PUSH1 0           0 44
    "f3"  # RETURN              (empty)          the contract's code is memory[0:44]
)
EMITTER_INIT: Final = _EMITTER_CONSTRUCTOR + EMITTER_RUNTIME
assert len(EMITTER_RUNTIME) == 0x2C and len(_EMITTER_CONSTRUCTOR) == 0x0B


class GanacheError(Exception):
    """ganache did not start, or exited."""


class RpcError(Exception):
    """A JSON-RPC error answer."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        self.method = method
        self.code: int | None = error.get("code")
        self.message: str = str(error.get("message", error))
        self.data: Any = error.get("data")
        super().__init__(f"{method}: {self.message} (code {self.code})")


def ganache_executable() -> Path | None:
    """The installed ganache, or None when it, or node that runs it, is missing."""
    if GANACHE.exists() and shutil.which("node"):
        return GANACHE
    return None


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (the node binds it itself, so this can race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def to_hex(value: int) -> str:
    return hex(value)


def from_hex(value: str) -> int:
    return int(value, 16)


class Ganache:
    """One ganache node. ``start()``, ``stop()``, ``restart()`` (same port, same database), or
    ``async with``. Its output (a banner, then little with quiet logging) is appended to
    ``log_path``, never to a pipe."""

    def __init__(
        self,
        db_path: Path,
        *,
        log_path: Path | None = None,
        port: int | None = None,
        instamine: Literal["eager", "strict"] = "eager",
        block_time: float = 0,
        chain_id: int = CHAIN_ID,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        executable: Path | None = None,
    ) -> None:
        self.db_path = Path(db_path)
        self.log_path = log_path or self.db_path.with_name(self.db_path.name + ".ganache.log")
        self.port = port or 0
        """0 until the first start chooses a free port; kept by restarts."""
        self.instamine = instamine
        self.block_time = block_time
        """Seconds between automatically mined blocks; 0 (the default): none, mine on demand."""
        self.chain_id = chain_id
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.executable = executable or GANACHE
        self.starts = 0
        self._process: trio.Process | None = None
        self._http: httpx.AsyncClient | None = None
        self._ids = itertools.count(1)

    # Lifecycle.

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    @property
    def rpc_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        return [
            str(self.executable),
            "--server.host", HOST,
            "--server.port", str(self.port),
            "--database.dbPath", str(self.db_path),
            "--wallet.deterministic",
            "--logging.quiet",
            "--miner.instamine", self.instamine,
            "--miner.blockTime", str(self.block_time),
            "--chain.chainId", str(self.chain_id),
            *self.extra_args,
        ]  # fmt: skip

    async def start(self) -> None:
        """Start the node and wait until its JSON-RPC answers. The first start picks a free port
        (trying another if that one was taken meanwhile); later ones reuse it."""
        if self.running:
            raise GanacheError("ganache is already running")
        await self.stop()  # reaps a node that exited by itself
        self.db_path.mkdir(parents=True, exist_ok=True)  # ganache makes no parent directory
        if self.port:
            await self._launch()
            return
        for attempt in range(3):
            self.port = free_port()
            try:
                await self._launch()
                return
            except GanacheError as error:
                self.port = 0
                if "EADDRINUSE" not in str(error) or attempt == 2:
                    raise

    async def stop(self, *, graceful: bool = False) -> None:
        """Stop the node and wait for it to exit: SIGKILL, like a crash (the database survives
        it), or with ``graceful`` SIGTERM, then SIGKILL after 10 seconds. Does nothing when it is
        not running."""
        process, http = self._process, self._http
        self._process = self._http = None
        with trio.CancelScope(shield=True):
            if http is not None:
                await http.aclose()
            if process is None:
                return
            if graceful and process.returncode is None:
                process.terminate()
                with trio.move_on_after(10):
                    await process.wait()
            if process.returncode is None:
                process.kill()
            await process.wait()

    async def restart(self, *, graceful: bool = False) -> None:
        """Stop it if it runs, then start it again on the same port and the same database."""
        await self.stop(graceful=graceful)
        await self.start()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _open_log(self) -> IO[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        log.write(f"\n=== start {self.starts + 1}: {' '.join(self.command())}\n".encode())
        log.flush()
        return log

    async def _launch(self) -> None:
        with self._open_log() as log:  # the child has its own descriptor: no pipe to fill
            process = await trio.lowlevel.open_process(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "FORCE_COLOR": "0"},
            )
        self.starts += 1
        self._process = process
        self._http = httpx.AsyncClient(timeout=10.0)
        try:
            with trio.move_on_after(self.startup_timeout):
                while True:
                    if process.poll() is not None:
                        raise GanacheError(
                            f"ganache exited with {process.returncode} at start; "
                            f"the end of {self.log_path}:\n{self.log_tail()}"
                        )
                    try:
                        chain_id = await self.rpc("eth_chainId")
                    except httpx.TransportError:
                        await trio.sleep(0.05)
                        continue
                    if from_hex(chain_id) != self.chain_id:
                        raise GanacheError(f"port {self.port} answers chain id {chain_id}")
                    return
            raise GanacheError(
                f"ganache did not answer on {self.rpc_url} within {self.startup_timeout} s; "
                f"the end of {self.log_path}:\n{self.log_tail()}"
            )
        except BaseException:
            await self.stop()
            raise

    # JSON-RPC over HTTP.

    async def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        """The ``result`` of one JSON-RPC call; RpcError on an ``error`` answer."""
        if self._http is None:
            raise GanacheError("ganache is not running")
        request = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": [*params]}
        response = await self._http.post(self.rpc_url, json=request)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        if "error" in body:
            raise RpcError(method, body["error"])
        return body["result"]

    async def mine(self, timestamp: int | None = None) -> dict[str, Any]:
        """Mine one block (with that timestamp, in seconds) and answer it. A timestamp also moves
        ganache's clock: later blocks are timed from it."""
        params = [] if timestamp is None else [{"timestamp": timestamp}]
        await self.rpc("evm_mine", params)
        block = await self.block("latest")
        assert block is not None
        return block

    async def snapshot(self) -> str:
        """``evm_snapshot``: an id for ``revert``."""
        snapshot_id: str = await self.rpc("evm_snapshot")
        return snapshot_id

    async def revert(self, snapshot_id: str) -> bool:
        """``evm_revert``: back to the snapshot's chain head (the snapshot is used up)."""
        reverted: bool = await self.rpc("evm_revert", [snapshot_id])
        return reverted

    async def block(self, number_or_tag: int | str = "latest") -> dict[str, Any] | None:
        """``eth_getBlockByNumber`` with transaction hashes only; None when there is none."""
        tag = to_hex(number_or_tag) if isinstance(number_or_tag, int) else number_or_tag
        block: dict[str, Any] | None = await self.rpc("eth_getBlockByNumber", [tag, False])
        return block

    async def block_number(self) -> int:
        return from_hex(await self.rpc("eth_blockNumber"))

    async def accounts(self) -> list[str]:
        accounts: list[str] = await self.rpc("eth_accounts")
        return accounts

    # Transactions.

    async def send_transaction(self, transaction: dict[str, Any]) -> dict[str, Any]:
        """``eth_sendTransaction`` (from the first account unless given) and wait for its
        receipt; raises unless it succeeded. With instamine eager it is mined at once, in a
        block of its own."""
        if "from" not in transaction:
            transaction = {"from": (await self.accounts())[0], **transaction}
        tx_hash: str = await self.rpc("eth_sendTransaction", [transaction])
        receipt = await self.receipt(tx_hash)
        if receipt["status"] != "0x1":
            raise GanacheError(f"transaction {tx_hash} failed: {receipt}")
        return receipt

    async def receipt(self, tx_hash: str, within: float = 10.0) -> dict[str, Any]:
        """The transaction's receipt, once it is mined."""
        with trio.fail_after(within):
            while True:
                receipt: dict[str, Any] | None = await self.rpc(
                    "eth_getTransactionReceipt", [tx_hash]
                )
                if receipt is not None:
                    return receipt
                await trio.sleep(0.01)

    async def deploy_emitter(self) -> str:
        """Deploy the emitter (see EMITTER_RUNTIME); answers its lower-case address."""
        receipt = await self.send_transaction(
            {"data": "0x" + EMITTER_INIT.hex(), "gas": to_hex(200_000)}
        )
        address: str = receipt["contractAddress"]
        return address.lower()

    async def emit(self, address: str, data: bytes) -> dict[str, Any]:
        """Call the emitter at ``address`` with ``data``: one log, topic EMITTER_TOPIC, data
        ``data``. Answers the receipt (its ``blockNumber``, ``blockHash`` and ``logs``)."""
        gas = 60_000 + 64 * len(data) + len(data) ** 2 // 256
        return await self.send_transaction(
            {"to": address, "data": "0x" + data.hex(), "gas": to_hex(gas)}
        )
