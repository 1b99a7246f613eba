"""access: repo visibility, grants, groups, token expiry and HMAC scheme, the hash-chained audit log

Existing tokens keep working: their rows say ``hash_scheme = 'sha256'`` and are re-hashed with the
instance key's HMAC subkey on their first successful use; they keep no expiry (``hubgate token list``
shows them as never expiring). Existing audit entries are chained here, in id order, as they are, and
an ``audit.chain-start`` entry records how many there were.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00
"""

import hashlib
import json
from datetime import datetime, timezone

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _at(value: datetime) -> str:
    value = value.replace(tzinfo=timezone.utc) if value.utcoffset() is None else value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hash(row: dict, seq: int, prev: str) -> str:
    # A frozen copy of registry.audit.entry_hash (format v1): a later change there must not change this upgrade.
    fields = {
        "v": 1, "seq": seq, "at": _at(row["at"]), "actor": row["actor"], "action": row["action"],
        "target": row["target"], "source": row["source"], "token_id": row["token_id"],
        "request_id": row["request_id"], "detail": row["detail"],
    }
    return hashlib.sha256((_canonical(fields) + prev).encode()).hexdigest()


_audit = sa.table(
    'auditevent',
    sa.column('pk', sa.Integer()), sa.column('at', sqlmodel.sql.sqltypes.UTCDateTime()),
    sa.column('actor', sa.String()), sa.column('action', sa.String()), sa.column('target', sa.String()),
    sa.column('source', sa.String()), sa.column('detail', sa.JSON()), sa.column('token_id', sa.String()),
    sa.column('request_id', sa.String()), sa.column('seq', sa.Integer()), sa.column('prev_hash', sa.String()),
    sa.column('hash', sa.String()),
)


def _chain_existing_audit_entries() -> None:
    bind = op.get_bind()
    rows = [dict(r._mapping) for r in bind.execute(sa.select(_audit).order_by(_audit.c.pk))]
    prev, seq = GENESIS, 0
    for row in rows:
        seq += 1
        h = _hash(row, seq, prev)
        bind.execute(_audit.update().where(_audit.c.pk == row["pk"]).values(seq=seq, prev_hash=prev, hash=h))
        prev = h
    start = {"at": datetime.now(timezone.utc), "actor": "system", "action": "audit.chain-start",
             "target": "audit", "source": "upgrade", "token_id": None, "request_id": None,
             "detail": {"chained_existing": len(rows)}}
    seq += 1
    h = _hash(start, seq, prev)
    bind.execute(_audit.insert().values(**start, seq=seq, prev_hash=prev, hash=h))
    bind.execute(sa.text("INSERT INTO auditchainhead (pk, seq, last_hash) VALUES (1, :seq, :h)"), {"seq": seq, "h": h})


def upgrade() -> None:
    op.create_table('accessepoch',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('pk')
    )
    op.create_table('auditchainhead',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('last_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.PrimaryKeyConstraint('pk')
    )
    op.create_table('accessgrant',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('repo_type', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('repo_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('repo_type', 'repo_id', 'subject')
    )
    with op.batch_alter_table('accessgrant', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_accessgrant_repo_id'), ['repo_id'], unique=False)
    op.create_table('groupmember',
    sa.Column('group_name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('token_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('group_name', 'token_id')
    )
    op.create_table('repoaccess',
    sa.Column('repo_type', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('repo_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('visibility', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('updated_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('repo_type', 'repo_id')
    )
    with op.batch_alter_table('apitoken', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('revoked_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        # Rows already here hold sha256(secret): they say so, and are re-hashed on their first use.
        batch_op.add_column(sa.Column('hash_scheme', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False,
                                      server_default='sha256'))
    with op.batch_alter_table('apitoken', schema=None) as batch_op:
        batch_op.alter_column('hash_scheme', server_default=None)
    with op.batch_alter_table('auditevent', schema=None) as batch_op:
        batch_op.add_column(sa.Column('token_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
        batch_op.add_column(sa.Column('request_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True))
        batch_op.add_column(sa.Column('seq', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('prev_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column('hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_auditevent_seq'), ['seq'], unique=True)
    op.execute("INSERT INTO accessepoch (pk, epoch) VALUES (1, 0)")
    _chain_existing_audit_entries()


def downgrade() -> None:
    with op.batch_alter_table('auditevent', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_auditevent_seq'))
        batch_op.drop_column('hash')
        batch_op.drop_column('prev_hash')
        batch_op.drop_column('seq')
        batch_op.drop_column('request_id')
        batch_op.drop_column('token_id')
    with op.batch_alter_table('apitoken', schema=None) as batch_op:
        batch_op.drop_column('hash_scheme')
        batch_op.drop_column('revoked_at')
        batch_op.drop_column('expires_at')
    op.drop_table('repoaccess')
    op.drop_table('groupmember')
    with op.batch_alter_table('accessgrant', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_accessgrant_repo_id'))
    op.drop_table('accessgrant')
    op.drop_table('auditchainhead')
    op.drop_table('accessepoch')
