"""Heatmaps, and report and heatmap state in the results view.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Frozen copies, as a migration must not change when later code does. New columns go
# last: PostgreSQL's CREATE OR REPLACE VIEW may only append columns, and keeps a site's
# grants on the view.
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
    p.created_at AS predicted_at,
    p.inference_precision AS inference_precision{extra}
FROM scans s
LEFT JOIN predictions p ON p.id = (
    SELECT p2.id FROM predictions p2
    WHERE p2.scan_id = s.id
    ORDER BY p2.created_at DESC, p2.id DESC
    LIMIT 1
)
LEFT JOIN model_versions mv ON mv.id = p.model_version_id
"""
VIEW_0006 = _SELECT.format(
    extra=""",
    s.report_status AS report_status,
    s.report_sent_at AS report_sent_at,
    s.report_error AS report_error,
    s.heatmap_status AS heatmap_status,
    s.heatmap_path AS heatmap_path"""
)
VIEW_0005 = _SELECT.format(extra="")


def _on_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    # SQLite copies the table to add a CHECK-constrained column and refuses to rename the
    # copy while a view names the table: the view is dropped around the copy there.
    if _on_sqlite():
        op.execute("DROP VIEW IF EXISTS scan_results")
    with op.batch_alter_table("scans", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "heatmap_status",
                sa.Enum(
                    "pending",
                    "done",
                    "failed",
                    name="heatmap_status",
                    native_enum=False,
                    create_constraint=True,
                    length=16,
                ),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("heatmap_path", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("heatmap_error", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("heatmap_sop_instance_uid", sa.String(length=64), nullable=True)
        )
    if _on_sqlite():
        op.execute("CREATE VIEW scan_results AS" + VIEW_0006)
    else:
        op.execute("CREATE OR REPLACE VIEW scan_results AS" + VIEW_0006)


def downgrade() -> None:
    # A view cannot lose columns in place on either database: dropped and created again.
    op.execute("DROP VIEW IF EXISTS scan_results")
    with op.batch_alter_table("scans", schema=None) as batch_op:
        batch_op.drop_column("heatmap_sop_instance_uid")
        batch_op.drop_column("heatmap_error")
        batch_op.drop_column("heatmap_path")
        # The enum's CHECK constraint names the column: it goes first.
        batch_op.drop_constraint(op.f("ck_scans_heatmap_status"), type_="check")
        batch_op.drop_column("heatmap_status")
    op.execute("CREATE VIEW scan_results AS" + VIEW_0005)
