"""Users with roles, the way `manage.py user_add` makes them."""

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-secret-123")

    @factory.post_generation
    def role(obj, create, extracted, **kwargs):
        if not create or not extracted:
            return
        if extracted == "staff":
            obj.is_staff = True
            obj.save(update_fields=["is_staff"])
        else:
            obj.groups.add(Group.objects.get_or_create(name=extracted)[0])
