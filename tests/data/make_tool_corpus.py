#!/usr/bin/env python3
"""Writes tests/data/tool-corpus.json: a realistic catalogue of MCP tools from twelve
upstream "servers" (github, gitlab, slack, jira, postgres, kubernetes, filesystem,
gmail, calendar, stripe, notion, sentry), for the tool-search quality test and benchmark.

Deterministic and offline: `python3 tests/data/make_tool_corpus.py` rewrites the file
byte for byte. Tools come from two sources per server:

- resource x verb templates (list/get/create/update/delete/search), whose wording is
  picked from several hand-written phrasings by a stable hash of the tool name, plus a
  hand-written sentence about the resource itself;
- hand-written tools (the operations that do not fit CRUD: merge, rollout restart,
  add reaction, refund, ...).

Annotations: read tools readOnlyHint=true; deletes destructiveHint=true; creates
destructiveHint=false; other writes readOnlyHint=false only; about one tool in ten has
no annotations at all.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

OUT = Path(__file__).with_name("tool-corpus.json")


def h(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def pick(options: list[str], key: str) -> str:
    return options[h(key) % len(options)]


def prop(desc: str, typ: str = "string", **extra) -> dict:
    p = {"type": typ, "description": desc}
    p.update(extra)
    return p


def tool(server: str, name: str, desc: str, args: dict, required: list[str], kind: str) -> dict:
    t = {
        "name": name,
        "description": desc,
        "inputSchema": {"type": "object", "properties": args, "required": required},
    }
    if h(server + "/" + name + "/annotations") % 100 >= 11:
        if kind == "read":
            t["annotations"] = {"readOnlyHint": True}
        elif kind == "delete":
            t["annotations"] = {"readOnlyHint": False, "destructiveHint": True}
        elif kind == "create":
            t["annotations"] = {"readOnlyHint": False, "destructiveHint": False}
        else:
            t["annotations"] = {"readOnlyHint": False}
    return t


# ---------------------------------------------------------------- verb templates

LIST = [
    "Lists {plural}{scope}. Results are paginated; pass the cursor returned by the previous call to get the next page.",
    "Returns a page of {plural}{scope}, most recently updated first.",
    "Enumerates {plural}{scope}. Supports simple filters and paging with per_page / page.",
    "Shows all {plural}{scope} the caller can see, optionally filtered.",
]
GET = [
    "Fetches a single {singular} by its identifier and returns all of its fields.",
    "Retrieves the full details of one {singular}.",
    "Looks up one {singular} and returns its metadata.",
    "Reads a {singular}: everything the API knows about it, as JSON.",
]
CREATE = [
    "Creates a new {singular}{scope} and returns it.",
    "Adds a {singular}{scope}. Returns the created object with its generated ID.",
    "Makes a new {singular}{scope} from the given fields.",
]
UPDATE = [
    "Modifies an existing {singular}; fields that are omitted keep their current values.",
    "Edits the fields of a {singular}. Only the fields you pass are changed.",
    "Changes one or more properties of a {singular} (partial update).",
]
DELETE = [
    "Permanently deletes a {singular}. This cannot be undone.",
    "Removes a {singular} for good; anything that depends on it may break.",
    "Deletes the given {singular}. Irreversible.",
]
SEARCH = [
    "Searches {plural} with a free-text query and optional filters; returns the best matches.",
    "Finds {plural} matching a query string (full-text, with qualifiers).",
    "Runs a search over {plural} and returns matching items ranked by relevance.",
]
VERBS = {
    "list": (LIST, "read"),
    "get": (GET, "read"),
    "create": (CREATE, "create"),
    "update": (UPDATE, "write"),
    "delete": (DELETE, "delete"),
    "search": (SEARCH, "read"),
}


def resource_tools(server: str, ctx: dict, res: dict) -> list[dict]:
    """res: key, plural_key, singular, plural, blurb, id (arg name, desc), verbs,
    fields (create/update args), filters (list args), scope (text)."""
    out = []
    for verb in res["verbs"]:
        templates, kind = VERBS[verb]
        key = res["key"] if verb in ("get", "create", "update", "delete") else res["plural_key"]
        name = res.get("names", {}).get(verb, f"{verb}_{key}")
        desc = pick(templates, server + name).format(
            singular=res["singular"], plural=res["plural"], scope=res.get("scope", "")
        )
        desc = desc + " " + res["blurb"]
        args = dict(ctx["args"])
        required = list(ctx["required"])
        id_name, id_desc = res["id"]
        if verb in ("get", "update", "delete"):
            args[id_name] = prop(id_desc)
            required.append(id_name)
        if verb == "list":
            for f, d in res.get("filters", {}).items():
                args[f] = prop(d)
            args["cursor"] = prop("Opaque pagination cursor from a previous response.")
            args["limit"] = prop("Maximum number of items to return (default 30, max 100).", "integer")
        if verb == "search":
            args["query"] = prop(res.get("query_desc", "Search text."))
            required.append("query")
            args["limit"] = prop("Maximum number of results.", "integer")
        if verb in ("create", "update"):
            for f, d in res.get("fields", {}).items():
                args[f] = prop(d)
            if verb == "create" and res.get("fields"):
                required.append(next(iter(res["fields"])))
        out.append(tool(server, name, desc, args, required, kind))
    return out


def hand(server: str, rows: list[tuple]) -> list[dict]:
    """rows: (name, kind, description, {arg: desc}, [required])."""
    out = []
    for name, kind, desc, args, required in rows:
        out.append(tool(server, name, desc, {k: prop(v) for k, v in args.items()}, required, kind))
    return out


CRUD = ["list", "get", "create", "update", "delete"]


def R(key, plural_key, singular, plural, blurb, id_arg, verbs=CRUD, **kw):
    return dict(key=key, plural_key=plural_key, singular=singular, plural=plural, blurb=blurb,
                id=id_arg, verbs=verbs, **kw)


# ---------------------------------------------------------------- github

GH_CTX = {"args": {"owner": prop("Repository owner (user or organisation login)."),
                   "repo": prop("Repository name.")}, "required": ["owner", "repo"]}
GH_RES = [
    R("issue", "issues", "issue", "issues",
      "Issues track bugs, feature requests and tasks in a GitHub repository.",
      ("issue_number", "The issue number."), ["list", "get", "create", "update", "search"],
      filters={"state": "open, closed or all.", "labels": "Comma-separated label names.", "assignee": "Login of the assignee."},
      fields={"title": "Issue title.", "body": "Markdown body.", "assignees": "Logins to assign.", "labels": "Labels to apply."},
      scope=" in a repository", query_desc="GitHub issue search syntax, e.g. 'is:open label:bug'."),
    R("issue_comment", "issue_comments", "comment on an issue", "comments on an issue",
      "Comments are the discussion thread below an issue or pull request.",
      ("comment_id", "The comment ID."), CRUD,
      filters={"issue_number": "The issue number.", "since": "Only comments updated after this ISO 8601 time."},
      fields={"body": "Markdown text of the comment.", "issue_number": "The issue number."}),
    R("pull_request", "pull_requests", "pull request", "pull requests",
      "A pull request proposes merging commits from a head branch into a base branch and collects review.",
      ("pull_number", "The pull request number."), ["list", "get", "create", "update", "search"],
      filters={"state": "open, closed or all.", "base": "Filter by base branch.", "head": "Filter by head user:branch."},
      fields={"title": "Title.", "head": "Branch containing the changes.", "base": "Branch to merge into.", "body": "Description.", "draft": "Open as a draft."},
      scope=" in a repository", query_desc="Search qualifiers such as 'is:pr is:open author:octocat'."),
    R("branch", "branches", "branch", "branches",
      "Branches are named pointers to commits in the repository's git history.",
      ("branch", "Branch name."), ["list", "get", "create", "delete"],
      fields={"branch": "Name for the new branch.", "from_ref": "Branch, tag or SHA to start from (default: the default branch)."}),
    R("release", "releases", "release", "releases",
      "A release packages a tag with notes and downloadable assets.",
      ("release_id", "The release ID."), CRUD,
      fields={"tag_name": "Tag to create or use.", "name": "Release title.", "body": "Release notes (Markdown).", "prerelease": "Mark as a pre-release."}),
    R("label", "labels", "label", "labels",
      "Labels are coloured tags used to categorise issues and pull requests.",
      ("name", "Label name."), CRUD, fields={"name": "Label name.", "color": "Hex colour without '#'.", "description": "Short description."}),
    R("milestone", "milestones", "milestone", "milestones",
      "Milestones group issues and pull requests toward a due date.",
      ("milestone_number", "Milestone number."), CRUD,
      fields={"title": "Milestone title.", "due_on": "Due date (ISO 8601).", "description": "Description."}),
    R("webhook", "webhooks", "repository webhook", "repository webhooks",
      "Webhooks POST a payload to an external URL when events happen in the repository.",
      ("hook_id", "Webhook ID."), CRUD,
      fields={"url": "Payload URL.", "events": "Events that trigger the hook, e.g. push, pull_request.", "secret": "Shared secret used to sign payloads."}),
    R("deploy_key", "deploy_keys", "deploy key", "deploy keys",
      "Deploy keys are SSH keys that grant access to a single repository.",
      ("key_id", "Deploy key ID."), ["list", "get", "create", "delete"],
      fields={"key": "Public SSH key.", "title": "Key title.", "read_only": "Whether the key is read-only."}),
    R("repository_secret", "repository_secrets", "Actions secret", "Actions secrets",
      "Encrypted secrets are exposed to GitHub Actions workflows as environment variables.",
      ("secret_name", "Secret name."), ["list", "get", "delete"]),
]
GH_HAND = [
    ("search_repositories", "read", "Finds GitHub repositories by keyword, language, stars or topic using the repository search syntax.",
     {"query": "Search query, e.g. 'tokio language:rust stars:>1000'.", "sort": "stars, forks or updated."}, ["query"]),
    ("search_code", "read", "Searches source code across GitHub for a string or symbol; returns file paths and matching fragments.",
     {"query": "Code search query, e.g. 'fn main repo:rust-lang/rust'."}, ["query"]),
    ("search_users", "read", "Finds GitHub users and organisations by login, name, location or follower count.", {"query": "User search query."}, ["query"]),
    ("get_repository", "read", "Returns a repository's metadata: description, default branch, visibility, stars, forks, topics and licence.",
     {"owner": "Owner login.", "repo": "Repository name."}, ["owner", "repo"]),
    ("create_repository", "create", "Creates a new repository for the authenticated user or an organisation.",
     {"name": "Repository name.", "org": "Organisation to create it in (optional).", "private": "Whether the repository is private.", "description": "Short description."}, ["name"]),
    ("fork_repository", "create", "Forks a repository into your account or an organisation, copying its branches.",
     {"owner": "Owner login.", "repo": "Repository name.", "organization": "Fork into this organisation instead."}, ["owner", "repo"]),
    ("delete_repository", "delete", "Deletes a repository with all its issues, pull requests, wiki and releases. Requires admin rights. Irreversible.",
     {"owner": "Owner login.", "repo": "Repository name."}, ["owner", "repo"]),
    ("get_file_contents", "read", "Reads a file or lists a directory in a repository at a given ref; file content is returned decoded.",
     {"owner": "Owner login.", "repo": "Repository name.", "path": "Path inside the repository.", "ref": "Branch, tag or commit SHA."}, ["owner", "repo", "path"]),
    ("create_or_update_file", "write", "Writes a single file to a branch as a new commit, creating it or replacing its contents.",
     {"owner": "Owner login.", "repo": "Repository name.", "path": "File path.", "content": "New file content.", "message": "Commit message.", "branch": "Target branch.", "sha": "Blob SHA of the file being replaced."}, ["owner", "repo", "path", "content", "message", "branch"]),
    ("push_files", "write", "Commits several files to a branch in one commit.",
     {"owner": "Owner login.", "repo": "Repository name.", "branch": "Target branch.", "files": "Array of {path, content}.", "message": "Commit message."}, ["owner", "repo", "branch", "files", "message"]),
    ("delete_file", "delete", "Deletes a file from a branch by committing its removal.",
     {"owner": "Owner login.", "repo": "Repository name.", "path": "File path.", "message": "Commit message.", "branch": "Branch."}, ["owner", "repo", "path", "message"]),
    ("list_commits", "read", "Lists the commit history of a branch or path, newest first, with author, date and message.",
     {"owner": "Owner login.", "repo": "Repository name.", "sha": "Branch or SHA to start from.", "path": "Only commits touching this path.", "author": "Filter by author."}, ["owner", "repo"]),
    ("get_commit", "read", "Returns one commit with its message, author, parents, and the per-file diff stats and patch.",
     {"owner": "Owner login.", "repo": "Repository name.", "sha": "Commit SHA."}, ["owner", "repo", "sha"]),
    ("compare_commits", "read", "Compares two refs and returns the commits and file changes between them (base...head).",
     {"owner": "Owner login.", "repo": "Repository name.", "base": "Base ref.", "head": "Head ref."}, ["owner", "repo", "base", "head"]),
    ("list_tags", "read", "Lists git tags of a repository with the commit each points at.", {"owner": "Owner login.", "repo": "Repository name."}, ["owner", "repo"]),
    ("merge_pull_request", "write", "Merges a pull request into its base branch using merge, squash or rebase.",
     {"owner": "Owner login.", "repo": "Repository name.", "pull_number": "PR number.", "merge_method": "merge, squash or rebase.", "commit_title": "Title of the merge commit."}, ["owner", "repo", "pull_number"]),
    ("get_pull_request_diff", "read", "Returns the unified diff of a pull request.",
     {"owner": "Owner login.", "repo": "Repository name.", "pull_number": "PR number."}, ["owner", "repo", "pull_number"]),
    ("list_pull_request_files", "read", "Lists the files changed by a pull request with additions, deletions and status.",
     {"owner": "Owner login.", "repo": "Repository name.", "pull_number": "PR number."}, ["owner", "repo", "pull_number"]),
    ("get_pull_request_status", "read", "Returns the combined status of the checks and commit statuses on a pull request's head commit.",
     {"owner": "Owner login.", "repo": "Repository name.", "pull_number": "PR number."}, ["owner", "repo", "pull_number"]),
    ("update_pull_request_branch", "write", "Brings a pull request's head branch up to date with its base by merging the base into it.",
     {"owner": "Owner login.", "repo": "Repository name.", "pull_number": "PR number."}, ["owner", "repo", "pull_number"]),
    ("list_pull_request_reviews", "read", "Lists the reviews submitted on a pull request (approved, changes requested, commented).",
     {"owner": "Owner login.", "repo": "Repository name.", "pull_number": "PR number."}, ["owner", "repo", "pull_number"]),
    ("create_pull_request_review", "create", "Submits a review on a pull request: approve it, request changes, or comment, optionally with inline comments.",
     {"owner": "Owner login.", "repo": "Repository name.", "pull_number": "PR number.", "event": "APPROVE, REQUEST_CHANGES or COMMENT.", "body": "Review summary.", "comments": "Inline comments: [{path, line, body}]."}, ["owner", "repo", "pull_number", "event"]),
    ("request_reviewers", "write", "Asks users or teams to review a pull request.",
     {"owner": "Owner login.", "repo": "Repository name.", "pull_number": "PR number.", "reviewers": "User logins.", "team_reviewers": "Team slugs."}, ["owner", "repo", "pull_number"]),
    ("list_workflow_runs", "read", "Lists GitHub Actions workflow runs for a repository, filterable by branch, event and status.",
     {"owner": "Owner login.", "repo": "Repository name.", "branch": "Branch.", "status": "queued, in_progress, completed, failure...", "workflow_id": "Workflow file name or ID."}, ["owner", "repo"]),
    ("get_workflow_run_logs", "read", "Downloads the logs of a GitHub Actions workflow run, job by job, to find why a CI build failed.",
     {"owner": "Owner login.", "repo": "Repository name.", "run_id": "Workflow run ID."}, ["owner", "repo", "run_id"]),
    ("rerun_workflow", "write", "Re-runs a GitHub Actions workflow run, or only its failed jobs.",
     {"owner": "Owner login.", "repo": "Repository name.", "run_id": "Workflow run ID.", "failed_only": "Re-run only the failed jobs."}, ["owner", "repo", "run_id"]),
    ("cancel_workflow_run", "write", "Cancels a queued or in-progress GitHub Actions workflow run.",
     {"owner": "Owner login.", "repo": "Repository name.", "run_id": "Workflow run ID."}, ["owner", "repo", "run_id"]),
    ("dispatch_workflow", "write", "Triggers a workflow that has a workflow_dispatch trigger, on a ref with inputs.",
     {"owner": "Owner login.", "repo": "Repository name.", "workflow_id": "Workflow file name.", "ref": "Git ref.", "inputs": "Workflow inputs."}, ["owner", "repo", "workflow_id", "ref"]),
    ("list_code_scanning_alerts", "read", "Lists code scanning (CodeQL) security alerts for a repository by severity and state.",
     {"owner": "Owner login.", "repo": "Repository name.", "severity": "critical, high, medium, low.", "state": "open, dismissed, fixed."}, ["owner", "repo"]),
    ("list_dependabot_alerts", "read", "Lists Dependabot alerts for vulnerable dependencies in a repository.",
     {"owner": "Owner login.", "repo": "Repository name.", "severity": "Severity filter.", "ecosystem": "npm, pip, cargo..."}, ["owner", "repo"]),
    ("list_notifications", "read", "Lists your unread GitHub notifications: mentions, review requests, assigned issues.",
     {"all": "Include read notifications.", "participating": "Only where you participate."}, []),
    ("mark_notifications_read", "write", "Marks notifications as read, all of them or one repository's.",
     {"owner": "Owner login.", "repo": "Repository name."}, []),
    ("star_repository", "create", "Stars a repository for the authenticated user.", {"owner": "Owner login.", "repo": "Repository name."}, ["owner", "repo"]),
    ("list_stargazers", "read", "Lists the users who starred a repository.", {"owner": "Owner login.", "repo": "Repository name."}, ["owner", "repo"]),
    ("list_collaborators", "read", "Lists the people with access to a repository and their permission level.", {"owner": "Owner login.", "repo": "Repository name."}, ["owner", "repo"]),
    ("add_collaborator", "create", "Invites a user to a repository with a given permission (pull, triage, push, maintain, admin).",
     {"owner": "Owner login.", "repo": "Repository name.", "username": "Login to invite.", "permission": "Permission level."}, ["owner", "repo", "username"]),
    ("remove_collaborator", "delete", "Removes a user's access to a repository.", {"owner": "Owner login.", "repo": "Repository name.", "username": "Login."}, ["owner", "repo", "username"]),
    ("create_gist", "create", "Creates a gist with one or more files, public or secret.",
     {"description": "Gist description.", "files": "Map of file name to content.", "public": "Public gist."}, ["files"]),
    ("list_gists", "read", "Lists the authenticated user's gists.", {"since": "Only gists updated after this time."}, []),
    ("add_issue_assignees", "write", "Assigns one or more users to an issue.",
     {"owner": "Owner login.", "repo": "Repository name.", "issue_number": "Issue number.", "assignees": "Logins."}, ["owner", "repo", "issue_number", "assignees"]),
    ("lock_issue", "write", "Locks an issue's conversation so only collaborators can comment.",
     {"owner": "Owner login.", "repo": "Repository name.", "issue_number": "Issue number.", "lock_reason": "off-topic, too heated, resolved, spam."}, ["owner", "repo", "issue_number"]),
    ("get_me", "read", "Returns the profile of the authenticated GitHub user: login, name, email, plan.", {}, []),
]

# ---------------------------------------------------------------- gitlab

GL_CTX = {"args": {"project_id": prop("Project ID or URL-encoded path, e.g. 'group/project'.")}, "required": ["project_id"]}
GL_RES = [
    R("issue", "issues", "GitLab issue", "GitLab issues", "Issues in a GitLab project track work items and bugs.",
      ("issue_iid", "Project-level issue IID."), ["list", "get", "create", "update", "delete", "search"],
      filters={"state": "opened or closed.", "labels": "Comma-separated labels.", "milestone": "Milestone title."},
      fields={"title": "Title.", "description": "Description (Markdown).", "assignee_ids": "User IDs.", "labels": "Labels."},
      query_desc="Text to look for in titles and descriptions."),
    R("merge_request", "merge_requests", "merge request", "merge requests",
      "A merge request asks to merge a source branch into a target branch and carries discussions and approvals.",
      ("merge_request_iid", "Merge request IID."), ["list", "get", "create", "update"],
      filters={"state": "opened, closed, merged, all.", "target_branch": "Target branch."},
      fields={"source_branch": "Source branch.", "target_branch": "Target branch.", "title": "Title.", "description": "Description."}),
    R("pipeline", "pipelines", "CI/CD pipeline", "CI/CD pipelines",
      "Pipelines run a project's CI/CD jobs in stages for a commit or branch.",
      ("pipeline_id", "Pipeline ID."), ["list", "get", "create", "delete"],
      filters={"ref": "Branch or tag.", "status": "running, pending, success, failed, canceled."},
      fields={"ref": "Branch or tag to run the pipeline for.", "variables": "Pipeline variables."}),
    R("project_variable", "project_variables", "CI/CD variable", "CI/CD variables",
      "Project variables are passed to CI jobs as environment variables; they can be masked or protected.",
      ("key", "Variable key."), CRUD, fields={"key": "Variable key.", "value": "Value.", "masked": "Mask in job logs.", "protected": "Only on protected branches."}),
    R("wiki_page", "wiki_pages", "wiki page", "wiki pages", "The project wiki holds Markdown documentation pages.",
      ("slug", "Page slug."), CRUD, fields={"title": "Page title.", "content": "Markdown content."}),
]
GL_HAND = [
    ("get_project", "read", "Returns a GitLab project's details: path, visibility, default branch, statistics.", {"project_id": "Project ID or path."}, ["project_id"]),
    ("search_projects", "read", "Searches GitLab projects you can access by name or path.", {"search": "Text to search for."}, ["search"]),
    ("create_project", "create", "Creates a new GitLab project in a namespace (group or user).",
     {"name": "Project name.", "namespace_id": "Group or user namespace ID.", "visibility": "private, internal, public."}, ["name"]),
    ("fork_project", "create", "Forks a GitLab project into another namespace.", {"project_id": "Project ID or path.", "namespace": "Target namespace."}, ["project_id"]),
    ("get_file", "read", "Reads a file from a GitLab repository at a ref.",
     {"project_id": "Project ID or path.", "file_path": "File path.", "ref": "Branch, tag or SHA."}, ["project_id", "file_path"]),
    ("create_or_update_file", "write", "Commits a single file to a GitLab branch.",
     {"project_id": "Project ID or path.", "file_path": "File path.", "content": "Content.", "branch": "Branch.", "commit_message": "Commit message."}, ["project_id", "file_path", "content", "branch", "commit_message"]),
    ("list_commits", "read", "Lists commits in a GitLab repository, optionally for one branch or path.",
     {"project_id": "Project ID or path.", "ref_name": "Branch or tag.", "path": "File path."}, ["project_id"]),
    ("create_branch", "create", "Creates a branch in a GitLab repository from a ref.",
     {"project_id": "Project ID or path.", "branch": "New branch name.", "ref": "Source ref."}, ["project_id", "branch", "ref"]),
    ("merge_merge_request", "write", "Accepts and merges a GitLab merge request, optionally squashing and removing the source branch.",
     {"project_id": "Project ID or path.", "merge_request_iid": "MR IID.", "squash": "Squash commits.", "should_remove_source_branch": "Delete the source branch after merge."}, ["project_id", "merge_request_iid"]),
    ("approve_merge_request", "write", "Approves a GitLab merge request as the current user.",
     {"project_id": "Project ID or path.", "merge_request_iid": "MR IID."}, ["project_id", "merge_request_iid"]),
    ("get_merge_request_diffs", "read", "Returns the changed files and diffs of a merge request.",
     {"project_id": "Project ID or path.", "merge_request_iid": "MR IID."}, ["project_id", "merge_request_iid"]),
    ("create_merge_request_note", "create", "Adds a comment (note) to a merge request discussion.",
     {"project_id": "Project ID or path.", "merge_request_iid": "MR IID.", "body": "Note text."}, ["project_id", "merge_request_iid", "body"]),
    ("create_issue_note", "create", "Adds a comment (note) to a GitLab issue.",
     {"project_id": "Project ID or path.", "issue_iid": "Issue IID.", "body": "Note text."}, ["project_id", "issue_iid", "body"]),
    ("retry_pipeline", "write", "Retries the failed jobs of a GitLab pipeline.", {"project_id": "Project ID or path.", "pipeline_id": "Pipeline ID."}, ["project_id", "pipeline_id"]),
    ("cancel_pipeline", "write", "Cancels the running jobs of a GitLab pipeline.", {"project_id": "Project ID or path.", "pipeline_id": "Pipeline ID."}, ["project_id", "pipeline_id"]),
    ("get_job_log", "read", "Returns the trace (console output) of a CI job.", {"project_id": "Project ID or path.", "job_id": "Job ID."}, ["project_id", "job_id"]),
    ("list_pipeline_jobs", "read", "Lists the jobs of a pipeline with stage, status and duration.", {"project_id": "Project ID or path.", "pipeline_id": "Pipeline ID."}, ["project_id", "pipeline_id"]),
    ("list_project_members", "read", "Lists members of a GitLab project with their access level.", {"project_id": "Project ID or path."}, ["project_id"]),
]

# ---------------------------------------------------------------- slack

SL_CTX = {"args": {}, "required": []}
SL_RES = [
    R("channel", "channels", "channel", "channels",
      "Channels are the public or private conversations of a Slack workspace.",
      ("channel_id", "Channel ID, e.g. C024BE91L."), ["list", "get", "create"],
      filters={"types": "public_channel, private_channel, mpim, im.", "exclude_archived": "Skip archived channels."},
      fields={"name": "Channel name (lower case, no spaces).", "is_private": "Create a private channel."},
      names={"get": "get_channel_info"}),
    R("user_group", "user_groups", "user group", "user groups",
      "User groups are @-mentionable handles for sets of people, such as @oncall.",
      ("usergroup_id", "User group ID."), ["list", "create", "update"],
      fields={"name": "Display name.", "handle": "Mention handle.", "description": "Purpose of the group."}),
    R("reminder", "reminders", "reminder", "reminders",
      "Reminders make Slackbot ping a user about something at a given time.",
      ("reminder_id", "Reminder ID."), ["list", "create", "delete"],
      fields={"text": "What to be reminded about.", "time": "When: a Unix timestamp or natural language like 'in 15 minutes'.", "user": "User to remind."}),
    R("bookmark", "bookmarks", "channel bookmark", "channel bookmarks",
      "Bookmarks are links pinned to the top bar of a channel.",
      ("bookmark_id", "Bookmark ID."), ["list", "create", "delete"],
      fields={"channel_id": "Channel ID.", "title": "Bookmark title.", "link": "URL."}),
]
SL_HAND = [
    ("post_message", "create", "Sends a message to a Slack channel or direct message, as the bot. Supports Markdown (mrkdwn) and Block Kit.",
     {"channel_id": "Channel or DM ID.", "text": "Message text.", "blocks": "Optional Block Kit blocks."}, ["channel_id", "text"]),
    ("reply_to_thread", "create", "Posts a reply in a message thread, optionally also broadcasting it to the channel.",
     {"channel_id": "Channel ID.", "thread_ts": "Timestamp of the parent message.", "text": "Reply text.", "reply_broadcast": "Also send to channel."}, ["channel_id", "thread_ts", "text"]),
    ("update_message", "write", "Edits the text of a message the bot posted earlier.",
     {"channel_id": "Channel ID.", "ts": "Message timestamp.", "text": "New text."}, ["channel_id", "ts", "text"]),
    ("delete_message", "delete", "Deletes a message from a channel.", {"channel_id": "Channel ID.", "ts": "Message timestamp."}, ["channel_id", "ts"]),
    ("schedule_message", "create", "Schedules a message to be sent to a channel at a future time.",
     {"channel_id": "Channel ID.", "text": "Message text.", "post_at": "Unix timestamp when to send."}, ["channel_id", "text", "post_at"]),
    ("get_channel_history", "read", "Fetches recent messages from a channel, newest first, between optional oldest and latest timestamps.",
     {"channel_id": "Channel ID.", "limit": "Number of messages.", "oldest": "Start of time range.", "latest": "End of time range."}, ["channel_id"]),
    ("get_thread_replies", "read", "Returns all replies in a message thread.", {"channel_id": "Channel ID.", "thread_ts": "Parent message timestamp."}, ["channel_id", "thread_ts"]),
    ("search_messages", "read", "Searches messages across the workspace with Slack search modifiers like in:#channel from:@user before:date.",
     {"query": "Search query.", "sort": "score or timestamp.", "count": "Results per page."}, ["query"]),
    ("search_files", "read", "Searches files shared in Slack by name or content.", {"query": "Search query."}, ["query"]),
    ("add_reaction", "create", "Adds an emoji reaction to a message.",
     {"channel_id": "Channel ID.", "timestamp": "Message timestamp.", "name": "Emoji name without colons, e.g. thumbsup."}, ["channel_id", "timestamp", "name"]),
    ("remove_reaction", "delete", "Removes an emoji reaction you added to a message.",
     {"channel_id": "Channel ID.", "timestamp": "Message timestamp.", "name": "Emoji name."}, ["channel_id", "timestamp", "name"]),
    ("get_reactions", "read", "Lists the emoji reactions on a message and which users added each one.",
     {"channel_id": "Channel ID.", "timestamp": "Message timestamp."}, ["channel_id", "timestamp"]),
    ("pin_message", "create", "Pins a message to a channel.", {"channel_id": "Channel ID.", "timestamp": "Message timestamp."}, ["channel_id", "timestamp"]),
    ("list_pins", "read", "Lists the items pinned in a channel.", {"channel_id": "Channel ID."}, ["channel_id"]),
    ("archive_channel", "write", "Archives a channel; it becomes read-only and leaves the sidebar.", {"channel_id": "Channel ID."}, ["channel_id"]),
    ("unarchive_channel", "write", "Restores an archived channel.", {"channel_id": "Channel ID."}, ["channel_id"]),
    ("rename_channel", "write", "Renames a channel.", {"channel_id": "Channel ID.", "name": "New name."}, ["channel_id", "name"]),
    ("set_channel_topic", "write", "Sets the topic shown in a channel's header.", {"channel_id": "Channel ID.", "topic": "New topic."}, ["channel_id", "topic"]),
    ("set_channel_purpose", "write", "Sets the description (purpose) of a channel.", {"channel_id": "Channel ID.", "purpose": "New purpose."}, ["channel_id", "purpose"]),
    ("invite_to_channel", "write", "Invites one or more users to a channel.", {"channel_id": "Channel ID.", "users": "Comma-separated user IDs."}, ["channel_id", "users"]),
    ("kick_from_channel", "delete", "Removes a user from a channel.", {"channel_id": "Channel ID.", "user": "User ID."}, ["channel_id", "user"]),
    ("join_channel", "write", "Joins the bot to a public channel.", {"channel_id": "Channel ID."}, ["channel_id"]),
    ("leave_channel", "write", "Makes the bot leave a channel.", {"channel_id": "Channel ID."}, ["channel_id"]),
    ("list_channel_members", "read", "Lists the user IDs of the members of a channel.", {"channel_id": "Channel ID."}, ["channel_id"]),
    ("list_users", "read", "Lists the people in the workspace with their display names, time zones and status.", {"cursor": "Pagination cursor."}, []),
    ("get_user_profile", "read", "Returns a user's profile: real name, title, email, phone, status and avatar.", {"user_id": "User ID."}, ["user_id"]),
    ("lookup_user_by_email", "read", "Finds a Slack user by email address.", {"email": "Email address."}, ["email"]),
    ("get_user_presence", "read", "Tells whether a user is currently active or away.", {"user_id": "User ID."}, ["user_id"]),
    ("set_status", "write", "Sets the custom status (emoji and text) of the authenticated user, with an optional expiry.",
     {"status_text": "Status text.", "status_emoji": "Emoji, e.g. :palm_tree:.", "expiration": "Unix time when it clears."}, ["status_text"]),
    ("open_direct_message", "create", "Opens (or returns) a direct message conversation with one or more users.", {"users": "Comma-separated user IDs."}, ["users"]),
    ("upload_file", "create", "Uploads a file and shares it in channels.", {"channels": "Channel IDs.", "filename": "File name.", "content": "File content.", "initial_comment": "Message with the file."}, ["filename", "content"]),
    ("get_permalink", "read", "Returns a permanent link to a message.", {"channel_id": "Channel ID.", "message_ts": "Message timestamp."}, ["channel_id", "message_ts"]),
    ("mark_channel_read", "write", "Moves the read cursor of a channel to a message.", {"channel_id": "Channel ID.", "ts": "Timestamp."}, ["channel_id", "ts"]),
    ("list_emoji", "read", "Lists the custom emoji of the workspace.", {}, []),
    ("get_team_info", "read", "Returns the workspace's name, domain and icon.", {}, []),
]

# ---------------------------------------------------------------- jira

JI_CTX = {"args": {}, "required": []}
JI_RES = [
    R("issue", "issues", "Jira issue", "Jira issues", "Jira issues are the stories, bugs, tasks and epics of a project.",
      ("issue_key", "Issue key, e.g. PROJ-123."), ["get", "create", "update", "delete"],
      fields={"project_key": "Project key.", "summary": "Summary line.", "issue_type": "Bug, Story, Task, Epic.", "description": "Description.", "priority": "Priority name.", "assignee": "Account ID of the assignee."}),
    R("project", "projects", "Jira project", "Jira projects", "A project groups issues under a key and a workflow scheme.",
      ("project_key", "Project key."), ["list", "get", "create"],
      fields={"key": "Project key (upper case).", "name": "Project name.", "lead": "Account ID of the lead."}),
    R("sprint", "sprints", "sprint", "sprints", "Sprints are time-boxed iterations on a Scrum board.",
      ("sprint_id", "Sprint ID."), ["list", "get", "create", "update"],
      filters={"board_id": "Board ID.", "state": "future, active, closed."},
      fields={"name": "Sprint name.", "board_id": "Board ID.", "start_date": "Start date.", "end_date": "End date.", "goal": "Sprint goal."}),
    R("board", "boards", "agile board", "agile boards", "Boards show issues as Scrum or Kanban columns.",
      ("board_id", "Board ID."), ["list", "get"], filters={"project_key": "Only boards of this project.", "type": "scrum or kanban."}),
    R("version", "versions", "project version", "project versions", "Versions (fix versions) mark releases that issues ship in.",
      ("version_id", "Version ID."), ["list", "create", "update"], filters={"project_key": "Project key."},
      fields={"name": "Version name.", "project_key": "Project key.", "release_date": "Release date.", "released": "Mark as released."}),
    R("component", "components", "project component", "project components", "Components split a project into areas with their own lead.",
      ("component_id", "Component ID."), ["list", "create", "delete"], filters={"project_key": "Project key."},
      fields={"name": "Component name.", "project_key": "Project key.", "lead": "Component lead."}),
    R("filter", "filters", "saved filter", "saved filters", "Saved filters store a JQL query under a name for reuse on boards and dashboards.",
      ("filter_id", "Filter ID."), ["list", "get", "create", "delete"], fields={"name": "Filter name.", "jql": "JQL query."}),
]
JI_HAND = [
    ("search_issues", "read", "Searches Jira issues with JQL (Jira Query Language), e.g. 'project = PROJ AND status = \"In Progress\" AND assignee = currentUser()'.",
     {"jql": "JQL query.", "fields": "Fields to return.", "max_results": "Maximum results."}, ["jql"]),
    ("transition_issue", "write", "Moves an issue through its workflow to another status, e.g. To Do -> In Progress -> Done.",
     {"issue_key": "Issue key.", "transition_id": "Transition ID or name.", "resolution": "Resolution when closing."}, ["issue_key", "transition_id"]),
    ("get_transitions", "read", "Lists the workflow transitions available for an issue in its current status.", {"issue_key": "Issue key."}, ["issue_key"]),
    ("assign_issue", "write", "Assigns an issue to a user, or unassigns it.", {"issue_key": "Issue key.", "account_id": "Assignee account ID, or null."}, ["issue_key"]),
    ("add_comment", "create", "Adds a comment to a Jira issue.", {"issue_key": "Issue key.", "body": "Comment text (Atlassian document format or plain text)."}, ["issue_key", "body"]),
    ("get_comments", "read", "Returns the comments on a Jira issue, oldest first.", {"issue_key": "Issue key."}, ["issue_key"]),
    ("add_worklog", "create", "Logs time spent working on an issue.", {"issue_key": "Issue key.", "time_spent": "Duration like '3h 30m'.", "comment": "Work description.", "started": "When the work started."}, ["issue_key", "time_spent"]),
    ("get_worklogs", "read", "Lists the time logged on an issue by each person.", {"issue_key": "Issue key."}, ["issue_key"]),
    ("link_issues", "create", "Links two issues with a relation such as blocks, duplicates or relates to.",
     {"inward_issue": "Inward issue key.", "outward_issue": "Outward issue key.", "link_type": "Blocks, Duplicate, Relates."}, ["inward_issue", "outward_issue", "link_type"]),
    ("add_watcher", "write", "Adds a user as a watcher of an issue so they receive notifications.", {"issue_key": "Issue key.", "account_id": "User account ID."}, ["issue_key", "account_id"]),
    ("add_attachment", "create", "Attaches a file to an issue.", {"issue_key": "Issue key.", "filename": "File name.", "content_base64": "File content, base64."}, ["issue_key", "filename", "content_base64"]),
    ("move_issues_to_sprint", "write", "Moves issues into a sprint.", {"sprint_id": "Sprint ID.", "issue_keys": "Issue keys."}, ["sprint_id", "issue_keys"]),
    ("get_sprint_issues", "read", "Lists the issues in a sprint with their status and story points.", {"sprint_id": "Sprint ID."}, ["sprint_id"]),
    ("start_sprint", "write", "Starts a future sprint with start and end dates.", {"sprint_id": "Sprint ID.", "start_date": "Start.", "end_date": "End."}, ["sprint_id"]),
    ("complete_sprint", "write", "Closes the active sprint; unfinished issues move to the backlog or next sprint.", {"sprint_id": "Sprint ID."}, ["sprint_id"]),
    ("get_backlog", "read", "Lists the issues in a board's backlog, in rank order.", {"board_id": "Board ID."}, ["board_id"]),
    ("rank_issues", "write", "Reorders issues in the backlog, before or after another issue.", {"issue_keys": "Issue keys to move.", "rank_before": "Issue key to put them before."}, ["issue_keys"]),
    ("get_epic_issues", "read", "Lists the child issues of an epic.", {"epic_key": "Epic issue key."}, ["epic_key"]),
    ("get_issue_changelog", "read", "Returns the change history of an issue: who changed which field, when.", {"issue_key": "Issue key."}, ["issue_key"]),
    ("search_users", "read", "Finds Jira users by name or email to get their account IDs.", {"query": "Name or email."}, ["query"]),
    ("get_current_user", "read", "Returns the Jira account of the caller.", {}, []),
    ("list_issue_types", "read", "Lists the issue types (Bug, Story, Task, Epic...) available in a project.", {"project_key": "Project key."}, ["project_key"]),
    ("list_priorities", "read", "Lists the priority levels defined in Jira.", {}, []),
    ("create_issue_link_remote", "create", "Adds a remote link (a URL such as a GitHub pull request or a doc) to an issue.", {"issue_key": "Issue key.", "url": "URL.", "title": "Link title."}, ["issue_key", "url"]),
]

# ---------------------------------------------------------------- postgres

PG_CTX = {"args": {"database": prop("Database name (default: the connection's database).")}, "required": []}
PG_RES = [
    R("table", "tables", "table", "tables", "Tables hold rows of a PostgreSQL schema.",
      ("table", "Table name, optionally schema-qualified."), ["list", "get", "create", "delete"],
      filters={"schema": "Schema name (default public)."},
      fields={"table": "Table name.", "columns": "Column definitions: [{name, type, nullable, default}].", "primary_key": "Primary key columns."},
      names={"get": "describe_table", "delete": "drop_table"}),
    R("index", "indexes", "index", "indexes", "B-tree, hash, GIN and GiST indexes speed up lookups at the cost of writes.",
      ("index_name", "Index name."), ["list", "create", "delete"], filters={"table": "Only indexes of this table."},
      fields={"table": "Table.", "columns": "Indexed columns.", "method": "btree, hash, gin, gist, brin.", "unique": "Unique index.", "concurrently": "Build without locking writes."},
      names={"delete": "drop_index"}),
    R("view", "views", "view", "views", "Views are stored SELECT queries that behave like tables.",
      ("view", "View name."), ["list", "create", "delete"], fields={"view": "View name.", "definition": "SELECT statement.", "materialized": "Create a materialized view."},
      names={"delete": "drop_view"}),
    R("role", "roles", "database role", "database roles", "Roles are PostgreSQL users and groups that own objects and hold privileges.",
      ("role", "Role name."), ["list", "create", "delete"], fields={"role": "Role name.", "login": "Can log in.", "password": "Password."},
      names={"delete": "drop_role"}),
    R("schema", "schemas", "schema", "schemas", "Schemas are namespaces for tables, views and functions inside one database.",
      ("schema", "Schema name."), ["list", "create", "delete"], fields={"schema": "Schema name.", "owner": "Owning role."},
      names={"delete": "drop_schema"}),
    R("extension", "extensions", "extension", "extensions", "Extensions such as pg_stat_statements, postgis or pgvector add features to the database.",
      ("extension", "Extension name."), ["list", "create", "delete"], fields={"extension": "Extension name.", "version": "Version."},
      names={"delete": "drop_extension"}),
]
PG_HAND = [
    ("query", "read", "Runs a read-only SQL query (SELECT / WITH) inside a read-only transaction and returns the rows as JSON.",
     {"sql": "The SQL statement.", "params": "Positional parameters ($1, $2...).", "max_rows": "Row limit."}, ["sql"]),
    ("execute", "write", "Executes a data-changing SQL statement (INSERT, UPDATE, DELETE, DDL) and returns the affected row count.",
     {"sql": "SQL statement.", "params": "Parameters."}, ["sql"]),
    ("explain_query", "read", "Shows the execution plan of a query (EXPLAIN, optionally ANALYZE with timing and buffers) to diagnose slow queries.",
     {"sql": "Query to explain.", "analyze": "Actually run it and report real timings.", "buffers": "Report buffer usage."}, ["sql"]),
    ("list_columns", "read", "Lists a table's columns with data type, nullability and default.", {"table": "Table name.", "schema": "Schema."}, ["table"]),
    ("add_column", "write", "Adds a column to an existing table (ALTER TABLE ... ADD COLUMN).", {"table": "Table.", "column": "Column name.", "type": "SQL type.", "default": "Default value."}, ["table", "column", "type"]),
    ("drop_column", "delete", "Drops a column from a table along with its data.", {"table": "Table.", "column": "Column name."}, ["table", "column"]),
    ("rename_table", "write", "Renames a table.", {"table": "Current name.", "new_name": "New name."}, ["table", "new_name"]),
    ("truncate_table", "delete", "Removes all rows from a table instantly (TRUNCATE), keeping its structure.", {"table": "Table.", "cascade": "Also truncate referencing tables."}, ["table"]),
    ("insert_rows", "create", "Inserts rows into a table from a list of JSON objects.", {"table": "Table.", "rows": "Array of objects, column -> value.", "on_conflict": "do nothing or update."}, ["table", "rows"]),
    ("list_foreign_keys", "read", "Lists the foreign-key constraints of a table and the tables they reference.", {"table": "Table."}, ["table"]),
    ("list_constraints", "read", "Lists primary key, unique, check and exclusion constraints of a table.", {"table": "Table."}, ["table"]),
    ("table_size", "read", "Reports the on-disk size of a table, its indexes and TOAST data.", {"table": "Table."}, ["table"]),
    ("database_size", "read", "Reports how much disk space each database uses.", {}, []),
    ("list_databases", "read", "Lists the databases on the PostgreSQL server with owner, encoding and size.", {}, []),
    ("list_active_queries", "read", "Shows the currently running queries from pg_stat_activity: pid, user, state, duration, wait event.",
     {"min_duration_ms": "Only queries running longer than this."}, []),
    ("cancel_query", "write", "Cancels the running query of a backend (pg_cancel_backend).", {"pid": "Backend process ID."}, ["pid"]),
    ("terminate_backend", "delete", "Terminates a backend connection (pg_terminate_backend), rolling back its transaction.", {"pid": "Backend process ID."}, ["pid"]),
    ("list_locks", "read", "Lists held and awaited locks, showing which sessions block which.", {}, []),
    ("top_queries", "read", "Returns the most expensive statements from pg_stat_statements by total time, calls or mean time.",
     {"order_by": "total_time, mean_time or calls.", "limit": "How many."}, []),
    ("unused_indexes", "read", "Finds indexes that are never scanned and only slow down writes.", {"schema": "Schema."}, []),
    ("table_bloat", "read", "Estimates dead tuples and bloat per table to decide on VACUUM.", {"schema": "Schema."}, []),
    ("vacuum_analyze", "write", "Runs VACUUM (and ANALYZE) on a table to reclaim dead rows and refresh planner statistics.",
     {"table": "Table.", "full": "VACUUM FULL (locks the table)."}, ["table"]),
    ("grant_privileges", "write", "Grants privileges (SELECT, INSERT, UPDATE, DELETE, ALL) on a table or schema to a role.",
     {"privileges": "Privilege list.", "on": "Object.", "role": "Grantee."}, ["privileges", "on", "role"]),
    ("revoke_privileges", "write", "Revokes privileges on an object from a role.", {"privileges": "Privilege list.", "on": "Object.", "role": "Role."}, ["privileges", "on", "role"]),
    ("list_replication_slots", "read", "Lists replication slots and how far behind each consumer is.", {}, []),
    ("replication_lag", "read", "Reports streaming replication lag of each standby in bytes and seconds.", {}, []),
    ("list_functions", "read", "Lists user-defined functions and procedures with their signatures.", {"schema": "Schema."}, []),
    ("refresh_materialized_view", "write", "Refreshes a materialized view, optionally concurrently.", {"view": "View name.", "concurrently": "Without blocking readers."}, ["view"]),
    ("server_settings", "read", "Shows PostgreSQL configuration parameters (pg_settings) such as work_mem or max_connections.", {"name_like": "Pattern on the setting name."}, []),
    ("server_version", "read", "Returns the PostgreSQL server version.", {}, []),
]

# ---------------------------------------------------------------- kubernetes

K8_CTX = {"args": {"namespace": prop("Kubernetes namespace (default: the context's namespace)."),
                   "context": prop("kubeconfig context to use.")}, "required": []}
K8_RES = [
    R("pod", "pods", "pod", "pods", "Pods are the smallest deployable units: one or more containers sharing network and storage.",
      ("name", "Pod name."), ["list", "get", "delete"], filters={"label_selector": "Label selector, e.g. app=web.", "field_selector": "Field selector, e.g. status.phase=Running."},
      names={"list": "kubectl_get_pods", "get": "kubectl_describe_pod", "delete": "kubectl_delete_pod"}),
    R("deployment", "deployments", "deployment", "deployments", "Deployments manage ReplicaSets to keep a number of identical pods running and roll out new versions.",
      ("name", "Deployment name."), ["list", "get", "delete"], filters={"label_selector": "Label selector."},
      names={"list": "kubectl_get_deployments", "get": "kubectl_describe_deployment", "delete": "kubectl_delete_deployment"}),
    R("service", "services", "service", "services", "Services give a stable virtual IP and DNS name to a set of pods (ClusterIP, NodePort, LoadBalancer).",
      ("name", "Service name."), ["list", "get", "delete"],
      names={"list": "kubectl_get_services", "get": "kubectl_describe_service", "delete": "kubectl_delete_service"}),
    R("configmap", "configmaps", "ConfigMap", "ConfigMaps", "ConfigMaps hold non-secret configuration as key-value pairs mounted into pods.",
      ("name", "ConfigMap name."), ["list", "get", "create", "delete"], fields={"name": "Name.", "data": "Key-value data."},
      names={"list": "kubectl_get_configmaps", "get": "kubectl_get_configmap", "create": "kubectl_create_configmap", "delete": "kubectl_delete_configmap"}),
    R("secret", "secrets", "Secret", "Secrets", "Secrets hold sensitive data such as passwords and tokens, base64-encoded.",
      ("name", "Secret name."), ["list", "get", "create", "delete"], fields={"name": "Name.", "data": "Key-value data.", "type": "Opaque, kubernetes.io/tls, ..."},
      names={"list": "kubectl_get_secrets", "get": "kubectl_get_secret", "create": "kubectl_create_secret", "delete": "kubectl_delete_secret"}),
    R("namespace", "namespaces", "namespace", "namespaces", "Namespaces partition a cluster's resources between teams or environments.",
      ("name", "Namespace name."), ["list", "create", "delete"], fields={"name": "Namespace name."},
      names={"list": "kubectl_get_namespaces", "create": "kubectl_create_namespace", "delete": "kubectl_delete_namespace"}),
    R("ingress", "ingresses", "Ingress", "Ingresses", "Ingresses route external HTTP(S) traffic by host and path to services.",
      ("name", "Ingress name."), ["list", "get"], names={"list": "kubectl_get_ingresses", "get": "kubectl_describe_ingress"}),
    R("cronjob", "cronjobs", "CronJob", "CronJobs", "CronJobs run Jobs on a cron schedule.",
      ("name", "CronJob name."), ["list", "get", "delete"], names={"list": "kubectl_get_cronjobs", "get": "kubectl_describe_cronjob", "delete": "kubectl_delete_cronjob"}),
    R("statefulset", "statefulsets", "StatefulSet", "StatefulSets", "StatefulSets run pods with stable identities and persistent volumes, e.g. databases.",
      ("name", "StatefulSet name."), ["list", "get"], names={"list": "kubectl_get_statefulsets", "get": "kubectl_describe_statefulset"}),
    R("persistentvolumeclaim", "persistentvolumeclaims", "PersistentVolumeClaim", "PersistentVolumeClaims", "PVCs request storage from a StorageClass for pods.",
      ("name", "PVC name."), ["list", "delete"], names={"list": "kubectl_get_pvcs", "delete": "kubectl_delete_pvc"}),
]
K8_HAND = [
    ("kubectl_logs", "read", "Prints the logs of a container in a pod, optionally the previous (crashed) instance, the last N lines or since a duration.",
     {"pod": "Pod name.", "container": "Container name.", "tail": "Last N lines.", "since": "e.g. 10m, 1h.", "previous": "Logs of the previous terminated container."}, ["pod"]),
    ("kubectl_rollout_restart", "write", "Restarts all pods of a deployment, daemonset or statefulset with a rolling update (kubectl rollout restart).",
     {"kind": "deployment, daemonset or statefulset.", "name": "Resource name."}, ["kind", "name"]),
    ("kubectl_rollout_status", "read", "Waits for and reports the progress of a rollout until it completes or fails.", {"kind": "Resource kind.", "name": "Resource name."}, ["kind", "name"]),
    ("kubectl_rollout_undo", "write", "Rolls a deployment back to its previous (or a given) revision.", {"name": "Deployment name.", "to_revision": "Revision number."}, ["name"]),
    ("kubectl_rollout_history", "read", "Lists the revisions of a deployment's rollouts.", {"name": "Deployment name."}, ["name"]),
    ("kubectl_scale", "write", "Sets the number of replicas of a deployment, statefulset or replicaset.", {"kind": "Resource kind.", "name": "Name.", "replicas": "Desired replica count."}, ["kind", "name", "replicas"]),
    ("kubectl_autoscale", "create", "Creates a HorizontalPodAutoscaler that scales a deployment between min and max replicas on CPU usage.",
     {"name": "Deployment.", "min": "Minimum replicas.", "max": "Maximum replicas.", "cpu_percent": "Target CPU utilisation."}, ["name", "max"]),
    ("kubectl_set_image", "write", "Updates the container image of a deployment, triggering a rollout.", {"name": "Deployment.", "container": "Container name.", "image": "New image reference."}, ["name", "container", "image"]),
    ("kubectl_apply", "write", "Applies a YAML or JSON manifest to the cluster, creating or updating the resources it declares.", {"manifest": "Manifest text.", "dry_run": "server or client dry run."}, ["manifest"]),
    ("kubectl_delete", "delete", "Deletes resources of any kind by name or label selector.", {"kind": "Resource kind.", "name": "Name.", "label_selector": "Selector."}, ["kind"]),
    ("kubectl_get", "read", "Gets resources of any kind (including custom resources) as JSON, like kubectl get.", {"kind": "Resource kind.", "name": "Name.", "label_selector": "Selector.", "all_namespaces": "All namespaces."}, ["kind"]),
    ("kubectl_describe", "read", "Describes any resource with its events, like kubectl describe.", {"kind": "Resource kind.", "name": "Name."}, ["kind", "name"]),
    ("kubectl_exec", "write", "Runs a command inside a running container and returns its output.", {"pod": "Pod.", "container": "Container.", "command": "Command and arguments."}, ["pod", "command"]),
    ("kubectl_port_forward", "write", "Forwards a local port to a port of a pod or service.", {"resource": "pod/name or svc/name.", "local_port": "Local port.", "remote_port": "Remote port."}, ["resource", "remote_port"]),
    ("kubectl_get_events", "read", "Lists cluster events (scheduling failures, image pull errors, OOM kills), newest last.", {"field_selector": "e.g. involvedObject.name=web-1.", "types": "Normal or Warning."}, []),
    ("kubectl_top_pods", "read", "Shows CPU and memory usage of pods from the metrics server.", {"sort_by": "cpu or memory."}, []),
    ("kubectl_top_nodes", "read", "Shows CPU and memory usage of nodes.", {}, []),
    ("kubectl_get_nodes", "read", "Lists cluster nodes with status, roles, version and capacity.", {"label_selector": "Selector."}, []),
    ("kubectl_cordon", "write", "Marks a node unschedulable so no new pods land on it.", {"node": "Node name."}, ["node"]),
    ("kubectl_uncordon", "write", "Marks a node schedulable again.", {"node": "Node name."}, ["node"]),
    ("kubectl_drain", "write", "Evicts all pods from a node before maintenance, respecting PodDisruptionBudgets.", {"node": "Node name.", "ignore_daemonsets": "Ignore DaemonSet pods.", "delete_emptydir_data": "Allow deleting emptyDir data."}, ["node"]),
    ("kubectl_label", "write", "Adds, changes or removes labels on a resource.", {"kind": "Kind.", "name": "Name.", "labels": "key=value pairs; key- removes."}, ["kind", "name", "labels"]),
    ("kubectl_annotate", "write", "Adds or removes annotations on a resource.", {"kind": "Kind.", "name": "Name.", "annotations": "key=value pairs."}, ["kind", "name", "annotations"]),
    ("kubectl_create_job_from_cronjob", "create", "Runs a CronJob now by creating a Job from its template.", {"cronjob": "CronJob name.", "job_name": "Name for the Job."}, ["cronjob"]),
    ("kubectl_config_get_contexts", "read", "Lists kubeconfig contexts (clusters) and which one is current.", {}, []),
    ("kubectl_config_use_context", "write", "Switches the current kubeconfig context to another cluster.", {"name": "Context name."}, ["name"]),
    ("helm_list", "read", "Lists Helm releases installed in a namespace with chart, version and status.", {"all_namespaces": "All namespaces."}, []),
    ("helm_install", "create", "Installs a Helm chart as a new release with values.", {"release": "Release name.", "chart": "Chart reference.", "values": "Values YAML.", "version": "Chart version."}, ["release", "chart"]),
    ("helm_upgrade", "write", "Upgrades a Helm release to a new chart version or values.", {"release": "Release name.", "chart": "Chart.", "values": "Values YAML."}, ["release", "chart"]),
    ("helm_rollback", "write", "Rolls a Helm release back to an earlier revision.", {"release": "Release name.", "revision": "Revision."}, ["release"]),
    ("helm_uninstall", "delete", "Uninstalls a Helm release and deletes its resources.", {"release": "Release name."}, ["release"]),
]

# ---------------------------------------------------------------- filesystem

FS_HAND = [
    ("read_file", "read", "Reads the complete contents of a text file. Use head or tail to read only the first or last lines of large files.",
     {"path": "File path.", "head": "Only the first N lines.", "tail": "Only the last N lines."}, ["path"]),
    ("read_multiple_files", "read", "Reads several files at once; a file that cannot be read is reported without failing the others.", {"paths": "File paths."}, ["paths"]),
    ("read_media_file", "read", "Reads an image or audio file and returns it base64-encoded with its MIME type.", {"path": "File path."}, ["path"]),
    ("write_file", "write", "Creates a new file or overwrites an existing one with the given content.", {"path": "File path.", "content": "Text to write."}, ["path", "content"]),
    ("append_file", "write", "Appends text to the end of a file, creating it if needed.", {"path": "File path.", "content": "Text to append."}, ["path", "content"]),
    ("edit_file", "write", "Makes line-based edits to a text file: each edit replaces an exact old text with new text. Returns a git-style diff; dry_run previews it.",
     {"path": "File path.", "edits": "Array of {oldText, newText}.", "dry_run": "Preview only."}, ["path", "edits"]),
    ("create_directory", "create", "Creates a directory, including missing parents; succeeds silently if it exists.", {"path": "Directory path."}, ["path"]),
    ("list_directory", "read", "Lists the entries of a directory, marking each as [FILE] or [DIR].", {"path": "Directory path."}, ["path"]),
    ("list_directory_with_sizes", "read", "Lists a directory's entries with their sizes, sortable by name or size, plus totals.", {"path": "Directory path.", "sortBy": "name or size."}, ["path"]),
    ("directory_tree", "read", "Returns a recursive JSON tree of files and folders under a path.", {"path": "Root path.", "excludePatterns": "Glob patterns to skip."}, ["path"]),
    ("move_file", "write", "Moves or renames a file or directory. Fails if the destination exists.", {"source": "Source path.", "destination": "Destination path."}, ["source", "destination"]),
    ("copy_file", "create", "Copies a file or directory tree to a new location.", {"source": "Source path.", "destination": "Destination path.", "overwrite": "Replace the destination."}, ["source", "destination"]),
    ("delete_file", "delete", "Deletes a file.", {"path": "File path."}, ["path"]),
    ("delete_directory", "delete", "Deletes a directory, recursively if asked.", {"path": "Directory path.", "recursive": "Remove contents too."}, ["path"]),
    ("search_files", "read", "Recursively finds files and directories whose names match a glob pattern.", {"path": "Where to start.", "pattern": "Glob, e.g. **/*.rs.", "excludePatterns": "Globs to skip."}, ["path", "pattern"]),
    ("grep_files", "read", "Searches file contents for a regular expression and returns matching lines with file and line number.",
     {"path": "Root path.", "regex": "Regular expression.", "include": "Only files matching this glob.", "ignore_case": "Case-insensitive."}, ["path", "regex"]),
    ("get_file_info", "read", "Returns metadata of a file or directory: size, created/modified/accessed times, permissions, type.", {"path": "Path."}, ["path"]),
    ("list_allowed_directories", "read", "Lists the directories this server is allowed to access.", {}, []),
    ("change_permissions", "write", "Changes the permission bits of a file (chmod).", {"path": "Path.", "mode": "Octal mode, e.g. 644."}, ["path", "mode"]),
    ("create_symlink", "create", "Creates a symbolic link pointing at a target path.", {"target": "Target path.", "link_path": "Where to create the link."}, ["target", "link_path"]),
    ("compute_checksum", "read", "Computes the SHA-256 (or MD5) hash of a file.", {"path": "Path.", "algorithm": "sha256 or md5."}, ["path"]),
    ("compress_files", "create", "Packs files or folders into a zip or tar.gz archive.", {"paths": "Paths to include.", "archive": "Archive path.", "format": "zip or tar.gz."}, ["paths", "archive"]),
    ("extract_archive", "create", "Unpacks a zip or tar archive into a directory.", {"archive": "Archive path.", "destination": "Target directory."}, ["archive", "destination"]),
    ("disk_usage", "read", "Reports how much space a directory tree takes, per subdirectory.", {"path": "Directory.", "depth": "How deep to report."}, ["path"]),
    ("find_duplicate_files", "read", "Finds files with identical content under a directory.", {"path": "Directory."}, ["path"]),
]

# ---------------------------------------------------------------- gmail

GM_RES = [
    R("label", "labels", "Gmail label", "Gmail labels", "Labels organise mail like folders; a message can carry several.",
      ("label_id", "Label ID."), CRUD, fields={"name": "Label name.", "color": "Background colour."}),
    R("filter", "filters", "mail filter", "mail filters", "Filters apply actions (label, archive, forward, delete) to incoming mail matching criteria.",
      ("filter_id", "Filter ID."), ["list", "get", "create", "delete"],
      fields={"criteria": "from, to, subject, query, hasAttachment.", "action": "addLabelIds, removeLabelIds, forward."}),
    R("draft", "drafts", "draft", "drafts", "Drafts are unsent messages saved in the mailbox.",
      ("draft_id", "Draft ID."), CRUD, fields={"to": "Recipients.", "subject": "Subject.", "body": "Body text.", "cc": "Cc recipients."}),
]
GM_HAND = [
    ("send_email", "create", "Sends an email from the user's Gmail account, with optional cc, bcc, HTML body and attachments.",
     {"to": "Recipient addresses.", "subject": "Subject.", "body": "Plain-text body.", "html_body": "HTML body.", "cc": "Cc.", "bcc": "Bcc.", "attachments": "Files to attach."}, ["to", "subject", "body"]),
    ("reply_to_email", "create", "Replies to a message in its thread, keeping the subject and references; reply_all includes every recipient.",
     {"message_id": "Message to reply to.", "body": "Reply text.", "reply_all": "Reply to all."}, ["message_id", "body"]),
    ("forward_email", "create", "Forwards a message, with its attachments, to other recipients.", {"message_id": "Message ID.", "to": "Recipients.", "note": "Text above the forwarded message."}, ["message_id", "to"]),
    ("search_emails", "read", "Searches the mailbox with Gmail query syntax such as from:alice is:unread has:attachment newer_than:7d.",
     {"query": "Gmail search query.", "max_results": "Maximum messages."}, ["query"]),
    ("read_email", "read", "Returns one message: headers (from, to, subject, date), body text and attachment list.", {"message_id": "Message ID."}, ["message_id"]),
    ("get_thread", "read", "Returns every message of a conversation thread in order.", {"thread_id": "Thread ID."}, ["thread_id"]),
    ("list_messages", "read", "Lists message IDs in the mailbox, optionally within labels such as INBOX or UNREAD.", {"label_ids": "Labels.", "page_token": "Page token."}, []),
    ("modify_email_labels", "write", "Adds or removes labels on a message; removing INBOX archives it, removing UNREAD marks it read.",
     {"message_id": "Message ID.", "add_label_ids": "Labels to add.", "remove_label_ids": "Labels to remove."}, ["message_id"]),
    ("batch_modify_emails", "write", "Adds or removes labels on many messages at once.", {"message_ids": "Message IDs.", "add_label_ids": "Labels to add.", "remove_label_ids": "Labels to remove."}, ["message_ids"]),
    ("archive_email", "write", "Archives a message: removes it from the inbox without deleting it.", {"message_id": "Message ID."}, ["message_id"]),
    ("mark_as_read", "write", "Marks messages as read.", {"message_ids": "Message IDs."}, ["message_ids"]),
    ("mark_as_unread", "write", "Marks messages as unread.", {"message_ids": "Message IDs."}, ["message_ids"]),
    ("star_email", "write", "Stars a message so it shows under Starred.", {"message_id": "Message ID."}, ["message_id"]),
    ("trash_email", "delete", "Moves a message to the Trash, where it is deleted after 30 days.", {"message_id": "Message ID."}, ["message_id"]),
    ("delete_email", "delete", "Immediately and permanently deletes a message, bypassing Trash.", {"message_id": "Message ID."}, ["message_id"]),
    ("untrash_email", "write", "Restores a message from the Trash.", {"message_id": "Message ID."}, ["message_id"]),
    ("get_attachment", "read", "Downloads an attachment of a message, base64-encoded.", {"message_id": "Message ID.", "attachment_id": "Attachment ID."}, ["message_id", "attachment_id"]),
    ("send_draft", "write", "Sends an existing draft.", {"draft_id": "Draft ID."}, ["draft_id"]),
    ("get_vacation_settings", "read", "Reads the out-of-office auto-reply (vacation responder) settings.", {}, []),
    ("set_vacation_responder", "write", "Turns the out-of-office auto-reply on or off with a subject, message and date range.",
     {"enabled": "On or off.", "subject": "Auto-reply subject.", "message": "Auto-reply text.", "start": "Start date.", "end": "End date."}, ["enabled"]),
    ("list_send_as_aliases", "read", "Lists the addresses the user can send mail from.", {}, []),
    ("update_signature", "write", "Sets the email signature of a send-as address.", {"send_as_email": "Address.", "signature": "HTML signature."}, ["signature"]),
    ("list_forwarding_addresses", "read", "Lists verified forwarding addresses.", {}, []),
    ("block_sender", "create", "Creates a filter that sends all mail from an address straight to Trash.", {"email": "Sender address."}, ["email"]),
    ("unsubscribe", "write", "Uses the List-Unsubscribe header of a newsletter message to unsubscribe.", {"message_id": "Message ID."}, ["message_id"]),
    ("get_profile", "read", "Returns the mailbox address and its message and thread counts.", {}, []),
]

# ---------------------------------------------------------------- calendar

CA_CTX = {"args": {"calendar_id": prop("Calendar ID; 'primary' for the user's main calendar.")}, "required": []}
CA_RES = [
    R("event", "events", "calendar event", "calendar events", "Events have a start and end time, attendees, a location and an optional video conference link.",
      ("event_id", "Event ID."), CRUD + ["search"],
      filters={"time_min": "Lower bound (RFC 3339).", "time_max": "Upper bound (RFC 3339).", "single_events": "Expand recurring events."},
      fields={"summary": "Title.", "start": "Start time.", "end": "End time.", "attendees": "Email addresses of guests.", "location": "Place.", "description": "Notes.", "recurrence": "RRULE lines.", "add_meet_link": "Attach a Google Meet link."},
      query_desc="Text to match in title, description, location or attendees."),
    R("calendar", "calendars", "calendar", "calendars", "Secondary calendars hold separate sets of events that can be shared.",
      ("calendar_id", "Calendar ID."), ["list", "get", "create", "delete"], fields={"summary": "Calendar name.", "time_zone": "IANA time zone."}),
    R("acl_rule", "acl_rules", "sharing rule", "sharing rules", "Access control rules say who can see or edit a calendar (reader, writer, owner).",
      ("rule_id", "ACL rule ID."), ["list", "create", "delete"], fields={"scope": "user:email or domain:name.", "role": "freeBusyReader, reader, writer, owner."}),
]
CA_HAND = [
    ("quick_add_event", "create", "Creates an event from a natural-language sentence such as 'Lunch with Sam tomorrow at noon'.", {"calendar_id": "Calendar.", "text": "Sentence describing the event."}, ["text"]),
    ("find_free_time", "read", "Finds time slots when all given people are free within a range, for scheduling a meeting of a given length.",
     {"attendees": "Email addresses.", "time_min": "Range start.", "time_max": "Range end.", "duration_minutes": "Meeting length."}, ["attendees", "time_min", "time_max"]),
    ("query_free_busy", "read", "Returns busy intervals for a set of calendars between two times.", {"calendars": "Calendar IDs or emails.", "time_min": "Start.", "time_max": "End."}, ["calendars", "time_min", "time_max"]),
    ("respond_to_event", "write", "Accepts, declines or tentatively accepts an invitation as the current user, with an optional note.",
     {"calendar_id": "Calendar.", "event_id": "Event ID.", "response": "accepted, declined, tentative.", "comment": "Note to the organiser."}, ["event_id", "response"]),
    ("move_event", "write", "Moves an event to another calendar.", {"calendar_id": "Source calendar.", "event_id": "Event ID.", "destination": "Target calendar ID."}, ["event_id", "destination"]),
    ("list_event_instances", "read", "Lists the occurrences of a recurring event.", {"calendar_id": "Calendar.", "event_id": "Recurring event ID.", "time_min": "Start.", "time_max": "End."}, ["event_id"]),
    ("add_attendees", "write", "Invites more guests to an existing event and optionally emails them.", {"calendar_id": "Calendar.", "event_id": "Event ID.", "attendees": "Emails.", "send_updates": "all, externalOnly, none."}, ["event_id", "attendees"]),
    ("get_current_time", "read", "Returns the current date and time in the user's calendar time zone.", {"time_zone": "IANA zone."}, []),
    ("list_colors", "read", "Lists the colour palette available for events and calendars.", {}, []),
    ("get_calendar_settings", "read", "Returns the user's calendar settings: time zone, week start, default event length.", {}, []),
    ("create_out_of_office", "create", "Blocks time as out of office; invitations in that range are declined automatically.",
     {"start": "Start.", "end": "End.", "decline_message": "Message sent with declines."}, ["start", "end"]),
    ("create_focus_time", "create", "Blocks focus time with Do Not Disturb during the range.", {"start": "Start.", "end": "End."}, ["start", "end"]),
    ("set_working_location", "write", "Sets where you work on a day: home, office or elsewhere.", {"date": "Day.", "location_type": "homeOffice, officeLocation, customLocation.", "label": "Office name."}, ["date", "location_type"]),
]

# ---------------------------------------------------------------- stripe

ST_RES = [
    R("customer", "customers", "customer", "customers", "Customers hold contact details, payment methods and the subscriptions of a buyer.",
      ("customer_id", "Customer ID (cus_...)."), CRUD + ["search"],
      filters={"email": "Filter by exact email.", "created_gte": "Created on or after (Unix)."},
      fields={"email": "Email.", "name": "Full name.", "phone": "Phone.", "metadata": "Key-value metadata."},
      query_desc="Stripe search query, e.g. \"email:'jane@example.com'\" or \"metadata['plan']:'pro'\"."),
    R("product", "products", "product", "products", "Products describe the goods or services you sell; prices attach to them.",
      ("product_id", "Product ID (prod_...)."), CRUD, fields={"name": "Product name.", "description": "Description.", "active": "Available for purchase."}),
    R("price", "prices", "price", "prices", "Prices set the amount, currency and billing interval of a product.",
      ("price_id", "Price ID (price_...)."), ["list", "get", "create", "update"],
      filters={"product": "Product ID.", "active": "Only active prices."},
      fields={"product": "Product ID.", "unit_amount": "Amount in the smallest currency unit (cents).", "currency": "ISO currency.", "recurring_interval": "month or year."}),
    R("subscription", "subscriptions", "subscription", "subscriptions", "Subscriptions charge a customer on a recurring schedule for one or more prices.",
      ("subscription_id", "Subscription ID (sub_...)."), ["list", "get", "create", "update"],
      filters={"customer": "Customer ID.", "status": "active, past_due, canceled, trialing."},
      fields={"customer": "Customer ID.", "price": "Price ID.", "trial_days": "Free trial length.", "quantity": "Seats."}),
    R("invoice", "invoices", "invoice", "invoices", "Invoices itemise what a customer owes and can be paid automatically or sent by email.",
      ("invoice_id", "Invoice ID (in_...)."), ["list", "get", "create", "update", "delete"],
      filters={"customer": "Customer ID.", "status": "draft, open, paid, uncollectible, void."},
      fields={"customer": "Customer ID.", "collection_method": "charge_automatically or send_invoice.", "days_until_due": "Days until due."}),
    R("coupon", "coupons", "coupon", "coupons", "Coupons give a percentage or fixed-amount discount for a duration.",
      ("coupon_id", "Coupon ID."), ["list", "get", "create", "delete"], fields={"percent_off": "Percent discount.", "amount_off": "Fixed discount.", "duration": "once, repeating, forever."}),
    R("payment_intent", "payment_intents", "payment intent", "payment intents", "A PaymentIntent tracks one payment from creation through authentication to capture.",
      ("payment_intent_id", "PaymentIntent ID (pi_...)."), ["list", "get", "create"],
      filters={"customer": "Customer ID."}, fields={"amount": "Amount in cents.", "currency": "Currency.", "customer": "Customer ID.", "payment_method": "Payment method ID."}),
    R("webhook_endpoint", "webhook_endpoints", "webhook endpoint", "webhook endpoints", "Webhook endpoints receive Stripe events such as invoice.paid at your URL.",
      ("webhook_endpoint_id", "Endpoint ID (we_...)."), ["list", "create", "delete"], fields={"url": "Endpoint URL.", "enabled_events": "Event types."}),
]
ST_HAND = [
    ("create_refund", "create", "Refunds a charge or payment intent, fully or partially, with a reason.",
     {"payment_intent": "PaymentIntent ID.", "charge": "Charge ID.", "amount": "Amount to refund (cents); default everything.", "reason": "duplicate, fraudulent, requested_by_customer."}, []),
    ("list_refunds", "read", "Lists refunds, optionally for one charge or payment intent.", {"payment_intent": "PaymentIntent ID.", "limit": "Page size."}, []),
    ("cancel_subscription", "delete", "Cancels a subscription immediately or at the end of the current billing period.",
     {"subscription_id": "Subscription ID.", "at_period_end": "Cancel when the period ends.", "prorate": "Credit unused time."}, ["subscription_id"]),
    ("pause_subscription", "write", "Pauses collection on a subscription until a resume date.", {"subscription_id": "Subscription ID.", "resumes_at": "When to resume."}, ["subscription_id"]),
    ("finalize_invoice", "write", "Finalizes a draft invoice so it can be paid or sent.", {"invoice_id": "Invoice ID."}, ["invoice_id"]),
    ("send_invoice", "write", "Emails an invoice to the customer with a link to pay it.", {"invoice_id": "Invoice ID."}, ["invoice_id"]),
    ("pay_invoice", "write", "Attempts to pay an open invoice with the customer's default payment method.", {"invoice_id": "Invoice ID."}, ["invoice_id"]),
    ("void_invoice", "write", "Voids a finalized invoice that should not be paid.", {"invoice_id": "Invoice ID."}, ["invoice_id"]),
    ("create_invoice_item", "create", "Adds a line item to a customer's next or draft invoice.", {"customer": "Customer ID.", "amount": "Amount.", "description": "Line description.", "invoice": "Draft invoice ID."}, ["customer"]),
    ("retrieve_upcoming_invoice", "read", "Previews the next invoice of a customer or subscription, including proration.", {"customer": "Customer ID.", "subscription": "Subscription ID."}, ["customer"]),
    ("capture_payment_intent", "write", "Captures the funds of an authorized payment intent.", {"payment_intent_id": "PaymentIntent ID.", "amount_to_capture": "Amount."}, ["payment_intent_id"]),
    ("cancel_payment_intent", "write", "Cancels a payment intent that has not succeeded.", {"payment_intent_id": "PaymentIntent ID."}, ["payment_intent_id"]),
    ("list_charges", "read", "Lists charges, newest first, optionally for one customer.", {"customer": "Customer ID.", "created_gte": "Since (Unix)."}, []),
    ("get_balance", "read", "Returns the Stripe account balance: available and pending funds per currency.", {}, []),
    ("list_balance_transactions", "read", "Lists the movements of the balance: charges, refunds, fees, payouts.", {"type": "charge, refund, payout, ...", "payout": "Only those in this payout."}, []),
    ("list_payouts", "read", "Lists payouts to your bank account with amount, arrival date and status.", {"status": "pending, paid, failed."}, []),
    ("create_payout", "create", "Sends funds from the Stripe balance to your bank account.", {"amount": "Amount.", "currency": "Currency."}, ["amount", "currency"]),
    ("list_disputes", "read", "Lists chargebacks (disputes) raised by cardholders.", {"status": "needs_response, won, lost, ..."}, []),
    ("update_dispute", "write", "Submits evidence for a dispute.", {"dispute_id": "Dispute ID.", "evidence": "Evidence fields.", "submit": "Submit now."}, ["dispute_id"]),
    ("list_payment_methods", "read", "Lists a customer's saved cards and other payment methods.", {"customer": "Customer ID.", "type": "card, sepa_debit, ..."}, ["customer"]),
    ("attach_payment_method", "write", "Attaches a payment method to a customer.", {"payment_method": "PaymentMethod ID.", "customer": "Customer ID."}, ["payment_method", "customer"]),
    ("detach_payment_method", "delete", "Detaches a saved payment method from its customer.", {"payment_method": "PaymentMethod ID."}, ["payment_method"]),
    ("create_payment_link", "create", "Creates a shareable checkout link for a price that anyone can use to pay.", {"price": "Price ID.", "quantity": "Quantity."}, ["price"]),
    ("create_checkout_session", "create", "Creates a hosted Checkout session URL for a one-off payment or subscription.", {"price": "Price ID.", "mode": "payment or subscription.", "success_url": "Redirect on success.", "customer": "Customer ID."}, ["price", "mode", "success_url"]),
    ("create_billing_portal_session", "create", "Creates a customer portal link where a customer can update cards and cancel plans.", {"customer": "Customer ID.", "return_url": "Return URL."}, ["customer"]),
    ("search_charges", "read", "Searches charges with Stripe search syntax, e.g. \"amount>1000 AND status:'failed'\".", {"query": "Search query."}, ["query"]),
    ("list_events", "read", "Lists recent account events (API object changes) by type.", {"type": "Event type, e.g. charge.failed."}, []),
]

# ---------------------------------------------------------------- notion

NO_HAND = [
    ("search", "read", "Searches pages and databases in the Notion workspace by title.", {"query": "Text to look for in titles.", "filter_object": "page or database.", "sort": "last_edited_time."}, []),
    ("retrieve_page", "read", "Retrieves a Notion page's properties (not its content).", {"page_id": "Page ID."}, ["page_id"]),
    ("create_page", "create", "Creates a page as a child of a page or a row in a database, with properties and content blocks.",
     {"parent_page_id": "Parent page.", "parent_database_id": "Parent database.", "title": "Title.", "properties": "Database properties.", "children": "Block content."}, []),
    ("update_page_properties", "write", "Updates a page's properties, icon or cover; can archive it.", {"page_id": "Page ID.", "properties": "Properties.", "archived": "Archive the page."}, ["page_id"]),
    ("archive_page", "delete", "Moves a page to the trash (archived: true).", {"page_id": "Page ID."}, ["page_id"]),
    ("retrieve_page_property", "read", "Returns the value of one page property, paging through long relations and rollups.", {"page_id": "Page ID.", "property_id": "Property ID."}, ["page_id", "property_id"]),
    ("retrieve_block_children", "read", "Returns the content blocks of a page or block (paragraphs, headings, lists, to-dos).", {"block_id": "Page or block ID.", "start_cursor": "Cursor."}, ["block_id"]),
    ("append_block_children", "create", "Appends content blocks (paragraphs, headings, bullets, to-dos, code) to the end of a page or block.",
     {"block_id": "Page or block ID.", "children": "Blocks to append."}, ["block_id", "children"]),
    ("retrieve_block", "read", "Retrieves one block by ID.", {"block_id": "Block ID."}, ["block_id"]),
    ("update_block", "write", "Changes the text or checked state of a block.", {"block_id": "Block ID.", "content": "New block content."}, ["block_id", "content"]),
    ("delete_block", "delete", "Deletes (archives) a block.", {"block_id": "Block ID."}, ["block_id"]),
    ("query_database", "read", "Queries a Notion database with filters and sorts on its properties and returns matching rows (pages).",
     {"database_id": "Database ID.", "filter": "Property filter.", "sorts": "Sort order.", "page_size": "Page size."}, ["database_id"]),
    ("retrieve_database", "read", "Retrieves a database's schema: title and property definitions.", {"database_id": "Database ID."}, ["database_id"]),
    ("create_database", "create", "Creates an inline or full-page database under a page with a property schema.", {"parent_page_id": "Parent page.", "title": "Title.", "properties": "Property schema."}, ["parent_page_id", "title", "properties"]),
    ("update_database", "write", "Changes a database's title, description or property schema.", {"database_id": "Database ID.", "title": "Title.", "properties": "Schema changes."}, ["database_id"]),
    ("create_comment", "create", "Adds a comment to a page or replies in a discussion thread.", {"page_id": "Page ID.", "discussion_id": "Discussion ID.", "text": "Comment text."}, ["text"]),
    ("retrieve_comments", "read", "Lists the unresolved comments on a page or block.", {"block_id": "Page or block ID."}, ["block_id"]),
    ("list_users", "read", "Lists the members and bots of the Notion workspace.", {"start_cursor": "Cursor."}, []),
    ("retrieve_user", "read", "Retrieves a Notion user by ID.", {"user_id": "User ID."}, ["user_id"]),
    ("retrieve_bot_user", "read", "Returns the bot user of this integration and its workspace.", {}, []),
    ("duplicate_page", "create", "Duplicates a page with its content under a parent.", {"page_id": "Page ID.", "parent_page_id": "Where to put the copy."}, ["page_id"]),
    ("move_page", "write", "Moves a page under another parent page.", {"page_id": "Page ID.", "new_parent_id": "New parent page."}, ["page_id", "new_parent_id"]),
    ("get_page_markdown", "read", "Exports a page's content as Markdown.", {"page_id": "Page ID."}, ["page_id"]),
]


# ---------------------------------------------------------------- sentry

SE_CTX = {"args": {"organization_slug": prop("Organization slug.")}, "required": ["organization_slug"]}
SE_RES = [
    R("project", "projects", "Sentry project", "Sentry projects", "A Sentry project receives the errors and transactions of one application.",
      ("project_slug", "Project slug."), CRUD, fields={"name": "Project name.", "platform": "python, javascript, rust...", "team_slug": "Owning team."}),
    R("release", "releases", "Sentry release", "Sentry releases", "Releases tie events to a deployed version so regressions can be traced to commits.",
      ("version", "Release version string."), ["list", "get", "create"], fields={"version": "Version.", "projects": "Project slugs.", "refs": "Commit ranges."}),
    R("alert_rule", "alert_rules", "alert rule", "alert rules", "Alert rules notify a channel when error counts or latency cross a threshold.",
      ("rule_id", "Alert rule ID."), CRUD, fields={"name": "Rule name.", "conditions": "Trigger conditions.", "actions": "Notify Slack, email, PagerDuty...", "frequency": "Minimum minutes between alerts."}),
]
SE_HAND = [
    ("search_issues", "read", "Searches Sentry issues (grouped errors) with Sentry's query syntax, e.g. 'is:unresolved level:error release:1.4.2'.",
     {"query": "Issue search query.", "project_slug": "Project.", "stats_period": "24h, 14d..."}, ["query"]),
    ("get_issue_details", "read", "Returns a Sentry issue: title, culprit, first and last seen, event count, affected users and tags.", {"issue_id": "Issue ID."}, ["issue_id"]),
    ("get_latest_event", "read", "Returns the most recent event of an issue with its stack trace, breadcrumbs and request context.", {"issue_id": "Issue ID."}, ["issue_id"]),
    ("list_issue_events", "read", "Lists the individual error events grouped into an issue.", {"issue_id": "Issue ID."}, ["issue_id"]),
    ("resolve_issue", "write", "Marks a Sentry issue resolved, optionally in the next release.", {"issue_id": "Issue ID.", "in_next_release": "Resolve in next release."}, ["issue_id"]),
    ("ignore_issue", "write", "Ignores (archives) an issue until it happens again N times or for a duration.", {"issue_id": "Issue ID.", "ignore_duration": "Minutes.", "ignore_count": "Occurrences."}, ["issue_id"]),
    ("assign_issue", "write", "Assigns a Sentry issue to a user or team.", {"issue_id": "Issue ID.", "assigned_to": "user:ID or team:ID."}, ["issue_id", "assigned_to"]),
    ("delete_issue", "delete", "Deletes an issue and its events.", {"issue_id": "Issue ID."}, ["issue_id"]),
    ("merge_issues", "write", "Merges several issues that are the same bug into one.", {"issue_ids": "Issue IDs."}, ["issue_ids"]),
    ("get_event_attachments", "read", "Lists files attached to an event, such as minidumps.", {"project_slug": "Project.", "event_id": "Event ID."}, ["project_slug", "event_id"]),
    ("list_teams", "read", "Lists teams of the organization.", {}, []),
    ("list_members", "read", "Lists organization members and their roles.", {}, []),
    ("query_discover", "read", "Runs a Discover query over events: fields, aggregates like count() or p95(transaction.duration), grouped and sorted.",
     {"fields": "Columns and aggregates.", "query": "Filter.", "stats_period": "Time range.", "sort": "Sort field."}, ["fields"]),
    ("list_transactions", "read", "Lists performance transactions with throughput, p50/p95 duration and failure rate.", {"project_slug": "Project.", "stats_period": "Time range."}, []),
    ("list_cron_monitors", "read", "Lists cron monitors and whether scheduled jobs checked in on time.", {}, []),
    ("create_deploy", "create", "Records a deploy of a release to an environment.", {"version": "Release version.", "environment": "production, staging..."}, ["version", "environment"]),
    ("get_replay", "read", "Returns a session replay's metadata: user, URL, errors, duration.", {"replay_id": "Replay ID."}, ["replay_id"]),
    ("list_dsn_keys", "read", "Lists the client keys (DSNs) of a project used to configure SDKs.", {"project_slug": "Project."}, ["project_slug"]),
]


def build() -> dict:
    servers: dict[str, list[dict]] = {}

    def add(server, tools):
        servers.setdefault(server, []).extend(tools)

    for server, ctx, resources, rows in [
        ("github", GH_CTX, GH_RES, GH_HAND),
        ("gitlab", GL_CTX, GL_RES, GL_HAND),
        ("slack", SL_CTX, SL_RES, SL_HAND),
        ("jira", JI_CTX, JI_RES, JI_HAND),
        ("postgres", PG_CTX, PG_RES, PG_HAND),
        ("kubernetes", K8_CTX, K8_RES, K8_HAND),
        ("filesystem", {"args": {}, "required": []}, [], FS_HAND),
        ("gmail", {"args": {}, "required": []}, GM_RES, GM_HAND),
        ("calendar", CA_CTX, CA_RES, CA_HAND),
        ("stripe", {"args": {}, "required": []}, ST_RES, ST_HAND),
        ("notion", {"args": {}, "required": []}, [], NO_HAND),
        ("sentry", SE_CTX, SE_RES, SE_HAND),
    ]:
        for res in resources:
            add(server, resource_tools(server, ctx, res))
        tools = hand(server, rows)
        # Hand-written tools of servers with a shared context get its arguments too.
        for t in tools:
            for k, v in ctx["args"].items():
                if k not in t["inputSchema"]["properties"] and server in ("kubernetes", "postgres", "sentry"):
                    t["inputSchema"]["properties"][k] = v
        add(server, tools)

    for server, tools in servers.items():
        names = [t["name"] for t in tools]
        dupes = {n for n in names if names.count(n) > 1}
        assert not dupes, f"{server}: duplicate tool names {sorted(dupes)}"
    return {"servers": servers}


def main() -> None:
    corpus = build()
    OUT.write_text(json.dumps(corpus, indent=1, ensure_ascii=False) + "\n")
    total = sum(len(v) for v in corpus["servers"].values())
    per = ", ".join(f"{k} {len(v)}" for k, v in corpus["servers"].items())
    print(f"{OUT}: {total} tools ({per})")


if __name__ == "__main__":
    main()
