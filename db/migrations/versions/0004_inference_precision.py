"""Inference precision: what each prediction's forward pass computed in.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen copies, as a migration must not change when later code does. The new column
# goes last: PostgreSQL's CREATE OR REPLACE VIEW may only append columns, and keeps a
# site's grants on the view (SQLite has no OR REPLACE for views: drop and create).
_SELECT = """
SELECT
    s.id AS scan_id,
    s.sha256 AS sha256,
    s.source_path AS source_path,
    s.stored_path AS stored_path,
    s.format AS format,
    s.modality AS modality,
    s.body_part AS body_part,
    s.view_position AS view_position,
    s.study_instance_uid AS study_instance_uid,
    s.sop_instance_uid AS sop_instance_uid,
    s.patient_ref AS patient_ref,
    s.status AS status,
    s.error AS error,
    s.error_code AS error_code,
    s.attempts AS attempts,
    s.received_at AS received_at,
    s.finished_at AS finished_at,
    p.label AS label,
    p.probability AS probability,
    p.threshold AS threshold,
    mv.version AS model_version,
    p.created_at AS predicted_at{extra}
FROM scans s
LEFT JOIN predictions p ON p.id = (
    SELECT p2.id FROM predictions p2
    WHERE p2.scan_id = s.id
    ORDER BY p2.created_at DESC, p2.id DESC
    LIMIT 1
)
LEFT JOIN model_versions mv ON mv.id = p.model_version_id
"""
VIEW_0004 = _SELECT.format(extra=",\n    p.inference_precision AS inference_precision")
VIEW_0003 = _SELECT.format(extra="")


def _on_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    # A plain nullable column: added in place on both databases (no table copy).
    op.add_column(
        "predictions", sa.Column("inference_precision", sa.String(length=32), nullable=True)
    )
    if _on_sqlite():
        op.execute("DROP VIEW IF EXISTS scan_results")
        op.execute("CREATE VIEW scan_results AS" + VIEW_0004)
    else:
        op.execute("CREATE OR REPLACE VIEW scan_results AS" + VIEW_0004)


def downgrade() -> None:
    # A view cannot lose a column in place on either database (so a site's grants on it
    # must be given again after a downgrade); and SQLite copies the table to drop a
    # column, which it refuses while a view names the table.
    op.execute("DROP VIEW IF EXISTS scan_results")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("inference_precision")
    op.execute("CREATE VIEW scan_results AS" + VIEW_0003)
