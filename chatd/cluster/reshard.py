"""Re-sharding: after the shard list changes, move each user and channel to its new owner.

``chatd reshard --from OLD.toml --to NEW.toml --data-root DIR`` runs with every shard
stopped (docs/cluster.md "Re-sharding" has the whole procedure). Homes and sequencers are
rendezvous hashes over the shard names (:meth:`chatd.discovery.Discovery.home`), so adding an
N-th shard moves about 1/N of the users and channels, all to the new shard; removing one moves
exactly its own. The move, in this order:

1. **Checks.** Every environment opens (none is held by a running shard) and every record
   left in an outbox topic ``cluster`` was applied where it was going (such records, confirmed
   but not yet deleted, are dropped): every replica is up to date and no relay chain is in
   flight. Otherwise nothing is touched.
2. **Channels whose sequencer changed** (old sequencer S, new C): the whole history, the
   group record, the ``channels`` row and the group's record version (``#version``) are
   copied to C; then S drops the version and keeps the rest as a replica (its own members'
   inboxes point into it) with ``#replica`` at that version.
3. **Users whose home changed** (old home A, new home B), in batches: the account, tokens,
   friendship rows, inbox with a copy of every message it points to, memberships and read
   marks, send refs and push subscriptions, and for each channel of the user its ``channels``
   row and (for a group) the group record, are copied to B; then A deletes the user's rows.
4. **Relay cursors** (``relay``: channel \\0 shard -> last msg_id sent there) are reset on
   every shard, so the next record of any channel to any shard carries ``prev`` 0 and applies
   at once. With nothing in flight the chains carry no information, and a cursor kept could
   name a message its destination never had: a shard removed and later added again with an
   empty directory, or a shard that learns a channel from a new sequencer.

Every copy is key for key (a message, an inbox entry, an account keeps its key) or takes the
greater of two values (a ``channels`` row, a group version), and a source is deleted only after
its copy committed (synced). So the move can be stopped anywhere and run again: a step done
twice writes the same rows. A journal file records finished channel steps so a second run does
not copy their histories again; it is a speed-up, not what makes the move safe. Users need
none: a user whose account is gone from the old home is done.

What stays behind on purpose: message copies and group records on shards that no longer home
any member of the channel (never read there: history comes from the sequencer, replay from the
home's inbox), membership rows and send refs the old sequencer kept about members homed
elsewhere, and the old sequencer's copy of a moved channel's history. They are replicas nobody
asks; retention purges refs and tokens as usual.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from chatd.cluster import wire
from chatd.cluster.relay import GROUP_REPLICA, GROUP_VERSION, TOPIC
from chatd.config_errors import ConfigError
from chatd.discovery import Discovery, load_discovery
from chatd.domain.channels import is_group
from storage import ReadTx, WriteTx
from storage.codec import str_key, unpack
from storage.env import Txn
from storage.errors import StorageUnavailable
from storage.migrate import (
    OfflineEnv,
    all_rows,
    copy_message,
    copy_row,
    copy_rows,
    delete_rows,
    inbox_messages,
    keyed,
    names,
)

#: Sub-databases keyed user \0 ..., moved with their user (those this storage version has).
USER_ROWS = ("friends", "inboxes", "refs", "memberships", "push")
log = logging.getLogger("chatd.reshard")

#: Users per step: one copy transaction per destination, then one delete at the source.
BATCH = 200


class ReshardError(Exception):
    """The move cannot start (or go on); the message says why and names the shard."""


@dataclass
class Report:
    """What a run did. ``users``: (from, to) -> users moved; ``channels`` likewise."""

    users: Counter[tuple[str, str]] = field(default_factory=Counter)
    channels: Counter[tuple[str, str]] = field(default_factory=Counter)
    channels_skipped: int = 0  #: already moved by an earlier run (the journal says so)
    cursors_reset: int = 0

    def lines(self) -> list[str]:
        out = [f"users {a} -> {b}: {n}" for (a, b), n in sorted(self.users.items())]
        out += [f"channels {a} -> {b}: {n}" for (a, b), n in sorted(self.channels.items())]
        if self.channels_skipped:
            out.append(f"channels moved by an earlier run: {self.channels_skipped}")
        out.append(f"relay cursors reset: {self.cursors_reset}")
        return out


def data_paths(
    old: Discovery, new: Discovery, root: str | None, explicit: Mapping[str, str]
) -> dict[str, str]:
    """The data directory of every shard of either file: ``explicit`` first, else
    ``root/<name>`` (as ``chatd cluster`` lays them out). ReshardError names a shard with
    neither, or an explicit name neither file lists."""
    everyone = sorted(set(old.names) | set(new.names))
    unknown = sorted(set(explicit) - set(everyone))
    if unknown:
        raise ReshardError(f"--data {unknown[0]}: no such shard in either discovery file")
    out = {}
    for name in everyone:
        if name in explicit:
            out[name] = explicit[name]
        elif root is not None:
            out[name] = os.path.join(root, name)
        else:
            raise ReshardError(f"shard {name}: no data directory (--data {name}=PATH)")
    return out


def reshard(
    old: Discovery,
    new: Discovery,
    paths: Mapping[str, str],
    journal: str | Path,
    *,
    step: Callable[[str], None] | None = None,
    batch: int = BATCH,
) -> Report:
    """Move what changed owner from ``old``'s layout to ``new``'s (see the module docstring).

    ``paths``: shard name -> data directory, for every shard of either file. ``step`` is
    called after each committed transaction with what it did (progress, and the tests' crash
    points)."""
    envs = _open(old, new, paths)
    try:
        _check_outboxes(envs)
        plan = _plan_id(old, new)
        log = _Journal(Path(journal), plan, old, new)
        try:
            report = Report()
            mover = _Mover(old, new, envs, log, report, step or (lambda _: None))
            mover.channels()
            mover.users(batch)
            mover.reset_cursors()
            log.finish()
        finally:
            log.file.close()
        return report
    finally:
        for env in envs.values():
            env.close()


def _open(old: Discovery, new: Discovery, paths: Mapping[str, str]) -> dict[str, OfflineEnv]:
    envs: dict[str, OfflineEnv] = {}
    try:
        for name in sorted(set(old.names) | set(new.names)):
            try:
                envs[name] = OfflineEnv(paths[name], create=name not in old.names)
            except StorageUnavailable as exc:
                raise ReshardError(f"shard {name}: {exc}") from None
    except BaseException:
        for env in envs.values():
            env.close()
        raise
    return envs


def _check_outboxes(envs: Mapping[str, OfflineEnv]) -> None:
    """Refuse (naming the shard) while a relayed record was not applied at its destination.

    A record stays in its sequencer's outbox until the destination confirms it, and a little
    longer: the publisher deletes confirmed records on its next round, so a shard stopped
    right after ``/healthz`` said ``outbox_pending`` 0 may keep a few. Those are recognised by
    their effect at the destination (the message is there, the group version is reached, the
    friendship row has that state) and dropped; any other record stops the move."""
    drop: dict[str, list[int]] = {}
    for name, env in envs.items():
        with env.read() as txn:
            pending = ReadTx(txn).outbox_pending(TOPIC, 1_000_000)
        waiting = 0
        for seq, raw in pending:
            try:
                dest, payload = wire.unpack(raw)
                record = wire.decode(payload)
            except (ValueError, TypeError):
                record = None
            if record is not None and dest in envs and _applied(envs[dest], record):
                drop.setdefault(name, []).append(seq)
            else:
                waiting += 1
        if waiting:
            raise ReshardError(
                f"shard {name}: {waiting} relayed record(s) not yet applied by their "
                f"destination (outbox topic {TOPIC!r}): start the cluster, stop new traffic "
                "and wait until every shard's /healthz shows outbox_pending 0"
            )
    for name, seqs in drop.items():
        envs[name].write(partial(_drop_records, seqs=seqs))


def _drop_records(t: Txn, *, seqs: list[int]) -> int:
    return WriteTx(t).outbox_delete(TOPIC, seqs)


def _applied(env: OfflineEnv, record: wire.Relayed | wire.Op | tuple[str, list[int]]) -> bool:
    with env.read() as txn:
        r = ReadTx(txn)
        if isinstance(record, wire.Relayed):
            return r.message_get(record.message.channel, record.message.msg_id) is not None
        if isinstance(record, wire.Op) and record.kind == wire.GROUP:
            return r.relay_last(record.data["c"], GROUP_REPLICA) >= record.data["v"]
        if isinstance(record, wire.Op) and record.kind == wire.FRIEND:
            d = record.data
            return r.friend_get(d["u"], d["o"]) == d["s"]
    return False


def _plan_id(old: Discovery, new: Discovery) -> str:
    text = json.dumps([sorted(old.names), sorted(new.names)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Journal:
    """Finished steps of one move, a JSON line each (the first line names the move). A
    journal of another move that did not finish is refused: finish that one first."""

    def __init__(self, path: Path, plan: str, old: Discovery, new: Discovery) -> None:
        self.path = path
        self.done: set[str] = set()
        lines: list[dict[str, str]] = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    break  # a line cut short by a crash: the step is done again
        if lines and lines[0].get("plan") == plan:
            self.done = {entry["step"] for entry in lines[1:] if "step" in entry}
            self.file = open(path, "a")  # noqa: SIM115 - held for the whole move
            return
        if lines and not any("finished" in entry for entry in lines):
            head = lines[0]
            raise ReshardError(
                f"journal {path}: an unfinished move from {head.get('from')} to "
                f"{head.get('to')}: run that one again to finish it (or remove the journal)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w")  # noqa: SIM115
        self._write({"plan": plan, "from": list(old.names), "to": list(new.names)})

    def _write(self, entry: dict[str, object]) -> None:
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def record(self, step: str) -> None:
        self.done.add(step)
        self._write({"step": step})

    def finish(self) -> None:
        self._write({"finished": True})


class _Mover:
    def __init__(
        self,
        old: Discovery,
        new: Discovery,
        envs: Mapping[str, OfflineEnv],
        journal: _Journal,
        report: Report,
        step: Callable[[str], None],
    ) -> None:
        self.old, self.new, self.envs = old, new, envs
        self.journal, self.report, self.step = journal, report, step
        self.user_dbs = tuple(db for db in USER_ROWS if db in next(iter(envs.values())).databases)

    # -- channels

    def channels(self) -> None:
        for here, env in self.envs.items():
            if here not in self.old.names:
                continue
            with env.read() as txn:
                found = set(names(txn, "groups")) | set(names(txn, "channels"))
                found |= set(names(txn, "messages"))
            for channel in sorted(found):
                to = self.new.home(channel).name
                if self.old.home(channel).name != here or to == here:
                    continue
                key = f"channel {here} {channel}"
                if key in self.journal.done:
                    self.report.channels_skipped += 1
                    continue
                self._move_channel(channel, env, self.envs[to])
                self.step(f"copied {channel} {here} -> {to}")
                env.write(partial(_leave_sequencer, channel=channel))
                self.step(f"{here} left {channel}")
                self.journal.record(key)
                self.report.channels[(here, to)] += 1

    def _move_channel(self, channel: str, src: OfflineEnv, dst: OfflineEnv) -> None:
        with src.read() as s:
            dst.write(partial(_copy_channel, s, channel=channel))

    # -- users

    def users(self, batch: int) -> None:
        for here, env in self.envs.items():
            with env.read() as txn:
                moving = [u for u in names(txn, "accounts") if self.new.home(u).name != here]
                tokens = self._tokens(txn, set(moving), here)
            for i in range(0, len(moving), batch):
                chunk = moving[i : i + batch]
                by_dest: dict[str, list[str]] = {}
                for user in chunk:
                    by_dest.setdefault(self.new.home(user).name, []).append(user)
                for to, users in sorted(by_dest.items()):
                    with env.read() as s:
                        copy = partial(self._copy_users, s, users=users, to=to, tokens=tokens)
                        self.envs[to].write(copy)
                    self.step(f"copied {len(users)} users {here} -> {to}")
                env.write(partial(self._delete_users, users=chunk, tokens=tokens))
                self.step(f"{here} deleted {len(chunk)} users")
                for to, users in by_dest.items():
                    self.report.users[(here, to)] += len(users)

    @staticmethod
    def _tokens(txn: Txn, users: set[str], here: str) -> dict[str, list[bytes]]:
        """The token keys of each of ``users`` (tokens are keyed by digest, not by user)."""
        out: dict[str, list[bytes]] = {}
        for key, value in all_rows(txn, "tokens"):
            user = unpack(value).get("user")
            if user in users:
                out.setdefault(user, []).append(key)
        return out

    def _copy_users(
        self, s: Txn, d: Txn, *, users: Iterable[str], to: str, tokens: Mapping[str, list[bytes]]
    ) -> None:
        src, dst = ReadTx(s), WriteTx(d)
        for user in users:
            copy_row(s, d, "accounts", user.encode())
            for key in tokens.get(user, ()):
                copy_row(s, d, "tokens", key)
            for db in self.user_dbs:
                copy_rows(s, d, db, user)
            for channel, msg_id in inbox_messages(s, user):  # replay works on the new home
                copy_message(s, d, channel, msg_id)
            for channel, _ in src.memberships(user):
                _merge_last(src, dst, channel)
                if is_group(channel) and self.new.home(channel).name != to:
                    _merge_group_replica(src, dst, channel)

    def _delete_users(
        self, t: Txn, *, users: Iterable[str], tokens: Mapping[str, list[bytes]]
    ) -> None:
        for user in users:
            t.delete("accounts", user.encode())
            for key in tokens.get(user, ()):
                t.delete("tokens", key)
            for db in self.user_dbs:
                delete_rows(t, db, user)

    # -- relay cursors

    def reset_cursors(self) -> None:
        for here, env in self.envs.items():
            n = env.write(_reset_cursors)
            self.report.cursors_reset += n
            self.step(f"{here} reset {n} relay cursors")


def _copy_channel(s: Txn, d: Txn, *, channel: str) -> None:
    """The sequencer's part of ``channel``: history, group record, last row, version."""
    copy_rows(s, d, "messages", channel, overwrite=False)
    copy_row(s, d, "groups", channel.encode())
    src, dst = ReadTx(s), WriteTx(d)
    _merge_last(src, dst, channel)
    version = src.relay_last(channel, GROUP_VERSION)
    if version > dst.relay_last(channel, GROUP_VERSION):
        dst.relay_set(channel, GROUP_VERSION, version)


def _leave_sequencer(t: Txn, *, channel: str) -> None:
    """The old sequencer keeps its copy as a replica, at the group's version."""
    tx = WriteTx(t)
    version = tx.relay_last(channel, GROUP_VERSION)
    t.delete("relay", str_key(channel, GROUP_VERSION))
    if tx.group_get(channel) is not None and version > tx.relay_last(channel, GROUP_REPLICA):
        tx.relay_set(channel, GROUP_REPLICA, version)


def _merge_last(src: ReadTx, dst: WriteTx, channel: str) -> None:
    """The ``channels`` row: the later of the two."""
    msg_id, ts = src.channel_last(channel)
    if msg_id > dst.channel_last(channel)[0]:
        dst.channel_last_put(channel, msg_id, ts)


def _merge_group_replica(src: ReadTx, dst: WriteTx, channel: str) -> None:
    """A group's record for a replica: the source's, unless the destination holds a later
    version (the version is the sequencer's ``#version`` or a replica's ``#replica``)."""
    group = src.group_get(channel)
    if group is None:
        return
    version = max(src.relay_last(channel, GROUP_VERSION), src.relay_last(channel, GROUP_REPLICA))
    held = dst.relay_last(channel, GROUP_REPLICA)
    if version < held:
        return
    dst.group_put(channel, group)
    if version > held:
        dst.relay_set(channel, GROUP_REPLICA, version)


def _reset_cursors(t: Txn) -> int:
    """Delete every ``relay`` row that names a shard (not the ``#`` version rows)."""
    drop = [key for _, name, key in keyed(t, "relay") if not name.startswith("#")]
    for key in drop:
        t.delete("relay", key)
    return len(drop)


# -- the command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``chatd reshard``'s options (the procedure: docs/cluster.md "Re-sharding")."""
    p.add_argument("--from", dest="old", metavar="OLD.toml", required=True, help="the old file")
    p.add_argument("--to", dest="new", metavar="NEW.toml", required=True, help="the new file")
    p.add_argument(
        "--data-root", metavar="DIR", help="data directories are DIR/<shard name> (chatd cluster)"
    )
    p.add_argument(
        "--data",
        metavar="NAME=PATH",
        action="append",
        default=[],
        help="the data directory of shard NAME (repeat; wins over --data-root)",
    )
    p.add_argument(
        "--journal", metavar="FILE", help="progress journal (default DIR/reshard.journal)"
    )


def main(args: argparse.Namespace) -> int:
    """Run the move; 0 when done, 1 refused or failed (the message names the shard), 2 for
    bad arguments."""
    try:
        explicit = dict(_name_path(item) for item in args.data)
        old, new = load_discovery(args.old), load_discovery(args.new)
        paths = data_paths(old, new, args.data_root, explicit)
        journal = args.journal or (
            os.path.join(args.data_root, "reshard.journal") if args.data_root else None
        )
        if journal is None:
            raise ReshardError("--journal FILE is required without --data-root")
    except (ConfigError, ReshardError) as exc:
        print(f"chatd reshard: {exc}", file=sys.stderr)
        return 2
    try:
        report = reshard(old, new, paths, journal, step=lambda what: log.info("%s", what))
    except (ReshardError, StorageUnavailable) as exc:
        print(f"chatd reshard: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    print("chatd reshard: done; start the shards with", args.new)
    return 0


def _name_path(item: str) -> tuple[str, str]:
    name, sep, path = item.partition("=")
    if not sep or not name or not path:
        raise ReshardError(f"--data {item!r}: expected NAME=PATH")
    return name, path
