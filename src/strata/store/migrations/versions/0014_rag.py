"""rag and files: OpenAI files, vector stores, collections, documents, chunks, ACLs

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # rag
    op.create_table(
        "rag_collections",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("team", sa.String(200), nullable=False, index=True),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=True),
        sa.Column("chunking", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "rag_documents",
        sa.Column("collection_id", sa.String(40), sa.ForeignKey("rag_collections.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("team", sa.String(200), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("media_type", sa.String(100), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("acl", sa.JSON(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=True),
        sa.Column("source", sa.JSON(), nullable=True),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "rag_chunks",
        sa.Column("key", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("collection_id", sa.String(40), nullable=False),
        sa.Column("document_id", sa.String(200), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("heading", sa.Text(), nullable=True),
        sa.Column("start", sa.Integer(), nullable=False),
        sa.Column("end", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_rag_chunks_doc", "rag_chunks", ["collection_id", "document_id"])
    # files
    op.create_table(
        "files",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("team", sa.String(200), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("filename", sa.String(500), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_files_team_seq", "files", ["team", "seq"])
    op.create_table(
        "vector_stores",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("team", sa.String(200), nullable=False),
        sa.Column("collection_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(500), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("expires_after", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_active_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_vector_stores_team_seq", "vector_stores", ["team", "seq"])
    op.create_table(
        "vector_store_files",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("vector_store_id", sa.String(40), nullable=False),
        sa.Column("file_id", sa.String(40), nullable=False),
        sa.Column("team", sa.String(200), nullable=False),
        sa.Column("batch_id", sa.String(40), nullable=True),
        sa.Column("document_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("usage_bytes", sa.BigInteger(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=True),
        sa.Column("chunking_strategy", sa.JSON(), nullable=True),
        sa.Column("last_error", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("vector_store_id", "file_id", name="uq_vector_store_files"),
    )
    op.create_index("ix_vector_store_files_batch", "vector_store_files", ["batch_id"])
    op.create_table(
        "vector_store_file_batches",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("vector_store_id", sa.String(40), nullable=False, index=True),
        sa.Column("team", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(sa.Column("rag", sa.JSON(), nullable=True))  # chunks a RAG request used


def downgrade() -> None:
    # rag
    op.drop_index("ix_rag_chunks_doc", "rag_chunks")
    op.drop_table("rag_chunks")
    op.drop_table("rag_documents")
    op.drop_table("rag_collections")
    # files
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("rag")
    op.drop_table("vector_store_file_batches")
    op.drop_table("vector_store_files")
    op.drop_table("vector_stores")
    op.drop_index("ix_files_team_seq", "files")
    op.drop_table("files")
