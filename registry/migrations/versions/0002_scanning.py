"""content scanning: scan overrides, code approvals, a request's scan record

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 15:40:00
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('mirrorrequest', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scan', sa.JSON(), nullable=True))
    op.create_table('scanoverride',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('repo_type', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('repo_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('path', sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('rule', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('justification', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('request_pk', sa.Integer(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('repo_type', 'repo_id', 'path', 'sha256', 'rule'),
    )
    with op.batch_alter_table('scanoverride', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scanoverride_repo_id'), ['repo_id'], unique=False)
    op.create_table('codeapproval',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('repo_type', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('repo_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('path', sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('request_pk', sa.Integer(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('repo_type', 'repo_id', 'path', 'sha256'),
    )
    with op.batch_alter_table('codeapproval', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_codeapproval_repo_id'), ['repo_id'], unique=False)


def downgrade() -> None:
    op.drop_table('codeapproval')
    op.drop_table('scanoverride')
    with op.batch_alter_table('mirrorrequest', schema=None) as batch_op:
        batch_op.drop_column('scan')
