// Capabilities of a chat template are found by rendering, not by searching its source.
#include "inference/chat/template_capabilities.h"

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "tests/common/test_util.h"

namespace qwen::chat {
namespace {

std::unique_ptr<ChatTemplate> Template(const std::string& source) {
  auto t = ChatTemplate::FromSource(source);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

// The one-turn loop every template below shares.
constexpr char kTurns[] =
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}";

TEST(TemplateCapabilities, Qwen35TemplateHasToolsAndReasoning) {
  auto t = Template(testing::ReadFile(testing::DataPath("chat/qwen3.5-chat-template.jinja")));
  ASSERT_NE(t, nullptr);
  const TemplateCapabilities c = ProbeCapabilities(*t);
  EXPECT_TRUE(c.tools);
  EXPECT_TRUE(c.reasoning);
}

// The words alone, in a comment, are not the capability.
TEST(TemplateCapabilities, WordsInTheSourceAreNotCapabilities) {
  auto t = Template(std::string("{# no tools here, and no <think> either #}") + kTurns);
  ASSERT_NE(t, nullptr);
  const TemplateCapabilities c = ProbeCapabilities(*t);
  EXPECT_FALSE(c.tools);
  EXPECT_FALSE(c.reasoning);
}

TEST(TemplateCapabilities, ATemplateThatRendersToolsHasTools) {
  auto t = Template(
      std::string("{%- if tools %}<tools>{% for tool in tools %}{{ tool | tojson }}{% endfor %}"
                  "</tools>\n{%- endif %}") +
      kTurns);
  ASSERT_NE(t, nullptr);
  EXPECT_TRUE(ProbeCapabilities(*t).tools);
  EXPECT_FALSE(ProbeCapabilities(*t).reasoning);
  // Listing tool names without their parameters is not enough to call them.
  auto names_only =
      Template(std::string("{%- if tools %}{% for tool in tools %}{{ tool.function.name }} "
                           "{% endfor %}{%- endif %}") +
               kTurns);
  ASSERT_NE(names_only, nullptr);
  EXPECT_FALSE(ProbeCapabilities(*names_only).tools);
}

TEST(TemplateCapabilities, ReasoningFromTheGenerationPromptOrFromHistory) {
  auto prompt = Template(std::string(kTurns) +
                         "{%- if add_generation_prompt and enable_thinking %}<think>\n{% endif %}");
  ASSERT_NE(prompt, nullptr);
  EXPECT_TRUE(ProbeCapabilities(*prompt).reasoning);
  auto history = Template(
      "{%- for m in messages %}<|im_start|>{{ m.role }}\n"
      "{%- if m.reasoning_content %}<think>\n{{ m.reasoning_content }}\n</think>\n{% endif %}"
      "{{ m.content }}<|im_end|>\n{%- endfor %}");
  ASSERT_NE(history, nullptr);
  EXPECT_TRUE(ProbeCapabilities(*history).reasoning);
}

// A template that refuses the probes (it raises on anything it does not expect) has neither.
TEST(TemplateCapabilities, ATemplateThatRefusesTheProbesHasNeither) {
  auto t = Template("{{ raise_exception('only my own conversations') }}");
  ASSERT_NE(t, nullptr);
  const TemplateCapabilities c = ProbeCapabilities(*t);
  EXPECT_FALSE(c.tools);
  EXPECT_FALSE(c.reasoning);
}

}  // namespace
}  // namespace qwen::chat
