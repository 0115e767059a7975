from django.urls import path

from chat import apis, bot_apis

urlpatterns = [
    # Conversations and messages (writes are `database` jobs).
    path("conversations", apis.ConversationListCreateApi.as_view(), name="chat-conversations"),
    path("conversations/<str:conversation_id>", apis.ConversationDetailApi.as_view(), name="chat-conversation"),
    path("messages", apis.MessageCreateApi.as_view(), name="chat-messages"),
    path("db-jobs/<str:job_id>", apis.DbJobDetailApi.as_view(), name="chat-db-job"),
    # The chat bot (replies are `chat` jobs).
    path("bot", bot_apis.ChatBotApi.as_view(), name="chat-bot"),
    path("jobs/<str:job_id>", bot_apis.ChatBotJobApi.as_view(), name="chat-bot-job"),
]
