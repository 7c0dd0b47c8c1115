// Units of the security and validation work: token files, the constant-time comparison, the
// authenticator's verdicts, tool schemas and the text checks of request validation.
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/auth.h"
#include "service/limits.h"
#include "service/request.h"
#include "service/tls.h"

namespace qwen::service {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using Json = nlohmann::ordered_json;

std::string TempFile(const std::string& content) {
  char path[] = "/tmp/qwen-unit-XXXXXX";
  const int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  close(fd);
  return path;
}

TEST(ConstantTimeEqualsTest, EqualOnlyForIdenticalStrings) {
  EXPECT_TRUE(ConstantTimeEquals("s3cret-token", "s3cret-token"));
  EXPECT_FALSE(ConstantTimeEquals("s3cret-tokeN", "s3cret-token"));
  EXPECT_FALSE(ConstantTimeEquals("s3cret-toke", "s3cret-token"));               // a prefix
  EXPECT_FALSE(ConstantTimeEquals("s3cret-token!", "s3cret-token"));             // longer
  EXPECT_FALSE(ConstantTimeEquals("s3cret-tokens3cret-token", "s3cret-token"));  // cycled
  EXPECT_FALSE(ConstantTimeEquals("", "s3cret-token"));
  EXPECT_FALSE(ConstantTimeEquals("x", ""));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_FALSE(ConstantTimeEquals(std::string("a\0b", 3), "a"));
}

TEST(LoadAuthTokensTest, OneTokenPerLineSkippingCommentsAndBlanks) {
  const std::string path = TempFile("# tokens of the web tier\n  alpha-1  \n\nbeta_2\n\t\n");
  auto tokens = LoadAuthTokens(path);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_THAT(*tokens, ElementsAre("alpha-1", "beta_2"));
  unlink(path.c_str());
}

TEST(LoadAuthTokensTest, RefusesEmptyFilesBadTokensAndMissingFiles) {
  const std::string empty = TempFile("# nothing\n\n");
  EXPECT_EQ(LoadAuthTokens(empty).status().code(), absl::StatusCode::kInvalidArgument);
  const std::string spaced = TempFile("good\ntwo words\n");
  absl::Status st = LoadAuthTokens(spaced).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("line 2"));
  EXPECT_EQ(LoadAuthTokens("/nonexistent/tokens").status().code(), absl::StatusCode::kNotFound);
  unlink(empty.c_str());
  unlink(spaced.c_str());
}

TEST(AuthenticatorTest, Verdicts) {
  Authenticator auth({"alpha", "beta"}, /*exempt_probes=*/true);
  EXPECT_TRUE(auth.Check({"Bearer alpha"}).ok());
  EXPECT_TRUE(auth.Check({"bearer beta"}).ok());  // the scheme is case-insensitive
  EXPECT_EQ(auth.Check({}).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Check({"Bearer gamma"}).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Check({"Bearer alph"}).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Check({"Basic alpha"}).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Check({"alpha"}).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Check({"Bearer alpha", "Bearer beta"}).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(auth.IsExempt("/grpc.health.v1.Health/Check"));
  EXPECT_TRUE(auth.IsExempt("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"));
  EXPECT_FALSE(auth.IsExempt("/qwen.v1.Qwen/Generate"));
  EXPECT_FALSE(auth.IsExempt("/grpc.health.v1.HealthX/Check"));
  Authenticator strict({"alpha"}, /*exempt_probes=*/false);
  EXPECT_FALSE(strict.IsExempt("/grpc.health.v1.Health/Check"));
}

TEST(TlsOptionsTest, IncompleteSetsAreRefusedNamingTheFlag) {
  TlsOptions o;
  EXPECT_TRUE(MakeServerCredentials(o).ok());  // plaintext
  o.client_ca_file = "/x/ca.pem";
  EXPECT_THAT(std::string(MakeServerCredentials(o).status().message()),
              HasSubstr("--tls_client_ca"));
  o = TlsOptions();
  o.cert_file = "/x/cert.pem";
  EXPECT_THAT(std::string(MakeServerCredentials(o).status().message()), HasSubstr("--tls_key"));
  const std::string not_pem = TempFile("hello");
  o.cert_file = not_pem;
  o.key_file = not_pem;
  absl::Status st = MakeServerCredentials(o).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), StartsWith("--tls_cert"));
  unlink(not_pem.c_str());
}

TEST(MessageSizeTest, TheLimitAndTheTransportsHeadroom) {
  v1::GenerateRequest r;
  r.set_prompt(std::string(2000, 'a'));
  EXPECT_TRUE(CheckMessageSize(r, 4096).ok());
  absl::Status st = CheckMessageSize(r, 1024);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), StartsWith("request: "));
  EXPECT_EQ(TransportMessageLimit(8 << 20), 16 << 20);
  EXPECT_EQ(TransportMessageLimit(1024), 1024 + (1 << 20));
  EXPECT_EQ(TransportMessageLimit(int64_t{3} << 30), 2147483647);
}

TEST(ToolSchemaTest, AcceptsTypicalSchemas) {
  for (
      const char* s : {
          R"({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})",
          R"({"type": "object", "properties": {"n": {"type": ["integer", "null"]},
               "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
               "o": {"anyOf": [{"type": "string"}, {"type": "number"}]}},
               "additionalProperties": false})",
          R"({})",
      }) {
    EXPECT_TRUE(ValidateToolSchema(Json::parse(s), "p").ok()) << s;
  }
}

TEST(ToolSchemaTest, RefusesBrokenSchemasNamingThePath) {
  struct Case {
    const char* schema;
    const char* path;
  } cases[] = {
      {R"({"type": "string"})", "p.type"},
      {R"({"type": "object", "properties": {"a": {"type": "strnig"}}})", "p.properties.a.type"},
      {R"({"type": "object", "properties": []})", "p.properties"},
      {R"({"type": "object", "properties": {"a": 3}})", "p.properties.a"},
      {R"({"type": "object", "required": "a"})", "p.required"},
      {R"({"type": "object", "required": [1]})", "p.required"},
      {R"({"properties": {"a": {"type": "array", "items": "x"}}})", "p.properties.a.items"},
      {R"({"properties": {"a": {"enum": []}}})", "p.properties.a.enum"},
      {R"({"properties": {"a": {"anyOf": {}}}})", "p.properties.a.anyOf"},
      {R"({"description": 5})", "p.description"},
  };
  for (const Case& c : cases) {
    absl::Status st = ValidateToolSchema(Json::parse(c.schema), "p");
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.schema;
    EXPECT_THAT(std::string(st.message()), StartsWith(std::string(c.path) + ":")) << c.schema;
  }
  // Nesting is bounded.
  Json deep = Json::object();
  Json* at = &deep;
  for (int k = 0; k < kMaxSchemaDepth + 5; ++k) {
    (*at)["items"] = Json::object();
    at = &(*at)["items"];
  }
  EXPECT_THAT(std::string(ValidateToolSchema(deep, "p").message()), HasSubstr("deeper"));
}

TEST(CheckTextTest, Utf8AndNul) {
  EXPECT_TRUE(CheckText("héllo ✓", "f").ok());
  EXPECT_EQ(CheckText("\xff\xfe", "f").message(), "f: is not valid UTF-8");
  EXPECT_EQ(CheckText(std::string("a\0b", 3), "f").message(), "f: contains a NUL byte");
}

TEST(ChatValidationTest, SystemFirstUniqueToolsAndTheToolLimit) {
  v1::Chat chat;
  auto* m = chat.add_messages();
  m->set_role("user");
  m->set_content("hi");
  m = chat.add_messages();
  m->set_role("system");
  m->set_content("late");
  EXPECT_THAT(std::string(ChatToTemplateInput(chat, "chat").status().message()),
              StartsWith("chat.messages[1].role:"));
  chat.mutable_messages()->RemoveLast();
  for (int k = 0; k < 2; ++k) {
    v1::Tool* t = chat.add_tools();
    t->set_name("lookup");
    t->set_parameters_json(R"({"type": "object"})");
  }
  EXPECT_THAT(std::string(ChatToTemplateInput(chat, "chat").status().message()),
              StartsWith("chat.tools[1].name:"));
  chat.mutable_tools(1)->set_name("lookup2");
  EXPECT_TRUE(ChatToTemplateInput(chat, "chat").ok());
  EXPECT_THAT(std::string(ChatToTemplateInput(chat, "chat", /*max_tools=*/1).status().message()),
              StartsWith("chat.tools:"));
  chat.mutable_tools(1)->set_name("two words");
  EXPECT_THAT(std::string(ChatToTemplateInput(chat, "chat").status().message()),
              StartsWith("chat.tools[1].name:"));
}

}  // namespace
}  // namespace qwen::service
