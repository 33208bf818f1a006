"""One SAM template reader for ``serve``/``invoke`` and ``package``: short and long forms alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from peewee_serverless.errors import PackagingError
from peewee_serverless.local.template import read_template as read_for_local
from peewee_serverless.packaging.template import read_template as read_for_package
from peewee_serverless.sam_template import TemplateError, load_template

SHORT = """
Parameters:
  Engine: {Type: String, Default: postgresql}
Globals:
  Function:
    Runtime: python3.12
    Environment:
      Variables:
        DB_ENGINE: !Ref Engine
        REGION: !Ref AWS::Region
Resources:
  Notes:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: notes/
      Handler: app.handler
      Timeout: 9
      Environment:
        Variables:
          DB_NAME: notes
          DEBUG: true
          DB_HOST: !GetAtt Db.Endpoint.Address
          GREETING: !Sub "hi ${AWS::Region}"
      Events:
        Api: {Type: HttpApi}
"""

LONG = (
    SHORT.replace("!Ref Engine", "{Ref: Engine}")
    .replace("!Ref AWS::Region", "{Ref: AWS::Region}")
    .replace("!GetAtt Db.Endpoint.Address", '{"Fn::GetAtt": [Db, Endpoint.Address]}')
    .replace('!Sub "hi ${AWS::Region}"', '{"Fn::Sub": "hi ${AWS::Region}"}')
)


@pytest.mark.parametrize("text", [SHORT, LONG], ids=["short-tags", "long-form"])
def test_both_readers_see_the_same_function(tmp_path: Path, text: str) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(text)
    # What a machine without CloudFormation can know; the rest (pseudo parameters, !GetAtt,
    # !Sub) is left out by both, and a boolean is the string Lambda would get.
    expected = {"DB_ENGINE": "postgresql", "DB_NAME": "notes", "DEBUG": "true"}
    local = read_for_local(str(template))
    assert (local.logical_id, local.handler, local.timeout, local.event_version) == (
        "Notes",
        "app.handler",
        9,
        "v2",
    )
    assert local.environment == expected
    packaged = read_for_package(template, tmp_path / "notes")
    assert (packaged.name, packaged.runtime) == ("Notes", "python3.12")
    assert packaged.environment == expected


def test_unreadable_templates_are_one_line_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "template.yaml"
    bad.write_text("Resources: [unclosed\n")
    with pytest.raises(
        TemplateError, match=r"template .*template\.yaml is not valid YAML: [^\n]*$"
    ):
        load_template(bad)
    with pytest.raises(TemplateError, match="is not valid YAML"):
        read_for_local(str(bad))
    with pytest.raises(PackagingError, match="is not valid YAML"):
        read_for_package(bad, tmp_path)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(TemplateError, match="is not a SAM template"):
        load_template(bad)
    with pytest.raises(TemplateError, match="cannot read template"):
        load_template(tmp_path / "missing.yaml")
