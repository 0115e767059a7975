"""Hashed API tokens; plain-text tokens of earlier versions (DRF's authtoken table) are hashed over.

Clients keep their tokens: a migrated token is stored as its SHA-256 like any other and keeps working
(marked `legacy`, without the slimy_ prefix). The plain-text rows are then deleted. The emptied
`authtoken_token` table is left for the operator to drop; the app is no longer installed.
"""

import hashlib

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

LEGACY_TABLE = "authtoken_token"


def hash_legacy_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if LEGACY_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("slimy_site", "ApiToken")
    table = schema_editor.quote_name(LEGACY_TABLE)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id, created FROM {table}")
        rows = cursor.fetchall()
        ApiToken.objects.bulk_create(
            [
                ApiToken(
                    digest=hashlib.sha256(key.encode()).hexdigest(), user_id=user_id, created_at=created, legacy=True
                )
                for key, user_id, created in rows
            ],
            ignore_conflicts=True,
        )
        cursor.execute(f"DELETE FROM {table}")


class Migration(migrations.Migration):
    initial = True

    dependencies = [migrations.swappable_dependency(settings.AUTH_USER_MODEL)]

    operations = [
        migrations.CreateModel(
            name="ApiToken",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("digest", models.CharField(editable=False, max_length=64, unique=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ("expires_at", models.DateTimeField(blank=True, help_text="Empty: never expires.", null=True)),
                (
                    "legacy",
                    models.BooleanField(
                        default=False,
                        editable=False,
                        help_text="Migrated from a plain-text token of an earlier version (no slimy_ prefix); rotate it.",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="api_tokens",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={"verbose_name": "API token", "ordering": ["-created_at"]},
        ),
        migrations.RunPython(hash_legacy_tokens, migrations.RunPython.noop),
    ]
