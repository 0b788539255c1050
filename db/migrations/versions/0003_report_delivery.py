"""Report delivery: whether each DICOM scan's result went back to the PACS as an SR.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# SQLite cannot add a CHECK-constrained column in place, so batch mode copies the scans
# table, and SQLite refuses to rename the copy while a view names the table. The view is
# dropped and created again around the copy, on SQLite only: on PostgreSQL the columns
# are added in place and a site's grants on the view are kept. A frozen copy of the
# view of revision 0001, as a migration must not change when later code does.
SCAN_RESULTS_VIEW = """
CREATE VIEW scan_results AS
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
    p.created_at AS predicted_at
FROM scans s
LEFT JOIN predictions p ON p.id = (
    SELECT p2.id FROM predictions p2
    WHERE p2.scan_id = s.id
    ORDER BY p2.created_at DESC, p2.id DESC
    LIMIT 1
)
LEFT JOIN model_versions mv ON mv.id = p.model_version_id
"""


def _on_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    if _on_sqlite():
        op.execute("DROP VIEW IF EXISTS scan_results")
    with op.batch_alter_table("scans", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "report_status",
                sa.Enum(
                    "pending",
                    "sent",
                    "failed",
                    "disabled",
                    name="report_status",
                    native_enum=False,
                    create_constraint=True,
                    length=16,
                ),
                nullable=True,
            )
        )
        batch_op.add_column(
            sa.Column("report_attempts", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("report_next_attempt_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("report_sent_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("report_error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("report_path", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("report_sop_instance_uid", sa.String(length=64), nullable=True)
        )
        batch_op.create_index(
            "ix_scans_report_status_format_status",
            ["report_status", "format", "status"],
            unique=False,
        )
    if _on_sqlite():
        op.execute(SCAN_RESULTS_VIEW)


def downgrade() -> None:
    if _on_sqlite():
        op.execute("DROP VIEW IF EXISTS scan_results")
    with op.batch_alter_table("scans", schema=None) as batch_op:
        batch_op.drop_index("ix_scans_report_status_format_status")
        batch_op.drop_column("report_sop_instance_uid")
        batch_op.drop_column("report_path")
        batch_op.drop_column("report_error")
        batch_op.drop_column("report_sent_at")
        batch_op.drop_column("report_next_attempt_at")
        batch_op.drop_column("report_attempts")
        # The enum's CHECK constraint names the column: it goes first.
        batch_op.drop_constraint(op.f("ck_scans_report_status"), type_="check")
        batch_op.drop_column("report_status")
    if _on_sqlite():
        op.execute(SCAN_RESULTS_VIEW)
