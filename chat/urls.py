from django.urls import path

from chat import apis

urlpatterns = [
    # Conversations and messages (writes are `database` jobs).
    path("conversations", apis.ConversationListCreateApi.as_view(), name="chat-conversations"),
    path("conversations/<str:conversation_id>", apis.ConversationDetailApi.as_view(), name="chat-conversation"),
    path("messages", apis.MessageCreateApi.as_view(), name="chat-messages"),
    path("db-jobs/<str:job_id>", apis.DbJobDetailApi.as_view(), name="chat-db-job"),
]
