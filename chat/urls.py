from django.urls import path  # noqa: F401

from chat import bot_apis

urlpatterns = [
    path("bot", bot_apis.ChatBotApi.as_view(), name="chat-bot"),
    path("jobs/<str:job_id>", bot_apis.ChatBotJobApi.as_view(), name="chat-bot-job"),
]
